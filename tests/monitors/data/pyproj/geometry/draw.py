"""Drawing: the file the tests generate into (cut points are given as prefixes)."""

from geometry.colors import Color
from geometry.shapes import Point, Segment, total

origin = Point(0.0, 0.0)
edge = Segment(origin, Point(1.0, 1.0))


def paint(color: Color) -> str:
    match color:
        case Color.RED:
            return "red"
        case _:
            return "other"
