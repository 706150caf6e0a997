"""Colours of drawn shapes."""

import enum


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    BLUE = 3

    def describe(self) -> str:
        return self.name.lower()
