"""Points and segments."""

from __future__ import annotations


class Point:
    """A point in the plane."""

    def __init__(self, x: float, y: float) -> None:
        self.x = x
        self.y = y

    def norm(self) -> float:
        return (self.x**2 + self.y**2) ** 0.5

    def translate(self, dx: float, dy: float = 0.0, *, scale: float = 1.0) -> "Point":
        return Point(self.x * scale + dx, self.y * scale + dy)


class Segment:
    """Two points."""

    def __init__(self, start: Point, end: Point) -> None:
        self.start = start
        self.end = end

    def length(self) -> float:
        return self.start.translate(-self.end.x, -self.end.y).norm()


def total(*points: Point) -> float:
    return sum(p.norm() for p in points)
