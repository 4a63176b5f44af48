"""Where the search's points come from: the :class:`Suggester` interface, computed in
the calling thread (:class:`InProcessSuggester`) or ahead in a process of its own
(:class:`ProcessSuggester`)."""

from __future__ import annotations

from dtune.suggest.base import Suggester
from dtune.suggest.local import InProcessSuggester
from dtune.suggest.process import ProcessSuggester

__all__ = ["InProcessSuggester", "ProcessSuggester", "Suggester"]
