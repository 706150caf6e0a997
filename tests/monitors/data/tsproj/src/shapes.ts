export class Circle {
  constructor(public radius: number, private label?: string) {}
  area(): number { return Math.PI * this.radius ** 2; }
  scale(factor: number): Circle { return new Circle(this.radius * factor); }
}
export function makeCircle(r: number, ...tags: string[]): Circle { return new Circle(r); }
