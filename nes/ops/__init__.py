"""The operator's library: list, show, follow, trace, export runs and apply retention.

Each `nes` operator command (`nes/cli/runs.py`, `show.py`, `tail.py`, `trace.py`, `export.py`,
`retention.py apply`) is a thin parser over a function here; tests call these directly. Run files
are opened read-only and lockless (`nes.ops.runfile.RunFile`), so inspecting a live run never
touches its writer.
"""

from nes.ops.runfile import RunFile, RunFileError

__all__ = ["RunFile", "RunFileError"]
