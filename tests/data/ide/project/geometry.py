"""Shapes for the IDE backend test: Neovim opens this file and asks for a completion."""

import math


def circle_area(radius):
    return math.
