"""A small real project the monitor tests run a real jedi-language-server on."""
