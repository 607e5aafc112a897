# SPDX-License-Identifier: MIT
"""The exceptions onelip raises for user errors (a leaf: imports nothing of onelip).

A message that tells the user to change an argument names the library's argument (``lr``,
``overwrite=True``) as an :class:`Argument` part; the CLI, which catches the error, spells
the same parts as its flags (:meth:`NamesArguments.message`), so no message is rewritten by
string replacement.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Argument", "ArgumentError", "CheckpointError", "NamesArguments", "OutputError"]


class Argument(str):
    """A library argument named in an error message: ``Argument("overwrite", "overwrite=True")``
    reads ``overwrite=True``; its :attr:`name` is the key a front end spells its own way
    (``--force``). :attr:`value` is the argument's value where the spelling needs it."""

    name: str
    value: object

    def __new__(cls, name: str, text: str | None = None, *, value: object = None) -> Argument:
        self = super().__new__(cls, name if text is None else text)
        self.name, self.value = name, value
        return self


class NamesArguments:
    """Mixin of an exception whose message is built from parts, some of them
    :class:`Argument` s: ``str(err)`` reads them as the library names them,
    :meth:`message` with a front end's spelling of each."""

    parts: tuple[str, ...]

    def __init__(self, *parts: str) -> None:
        self.parts = parts
        super().__init__("".join(parts))

    @property
    def arguments(self) -> tuple[str, ...]:
        """The names of the arguments the message tells the user to change."""
        return tuple(p.name for p in self.parts if isinstance(p, Argument))

    def message(self, spelling: Mapping[str, str]) -> str:
        """The message with each :class:`Argument` named ``k`` in ``spelling`` written as
        ``spelling[k]`` (``{value}`` in it: the argument's value)."""
        return "".join(spelling[p.name].format(value=p.value)
                       if isinstance(p, Argument) and p.name in spelling else p
                       for p in self.parts)


class CheckpointError(NamesArguments, ValueError):
    """A run folder or weight file that cannot be loaded; the message says what is wrong and
    what to do."""


class OutputError(NamesArguments, ValueError):
    """A place onelip cannot or will not write to: a file where a folder is needed, a folder
    that is not a run folder where a run would replace it, a read-only folder; the message
    says what to do."""


class ArgumentError(NamesArguments, ValueError):
    """An argument onelip cannot use as given; the message names it (:class:`Argument`)."""
