"""Settings: a class whose body annotates a name it never assigns (an instance attribute only)."""


class Settings:
    name: str
    scale: float = 1.0

    def __init__(self, name: str) -> None:
        self.name = name

    def describe(self) -> str:
        return f"{self.name} x{self.scale}"
