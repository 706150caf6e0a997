import { Circle, makeCircle } from "./shapes";

const c = new Circle(2);
