"""How every ``hookdb`` subcommand presents itself: a one-line summary, a description and examples."""

from __future__ import annotations

import argparse
from typing import Any


def command(group: Any, name: str, summary: str, *examples: str, **options: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``group`` (an ``add_subparsers()`` result): ``summary`` is its line in
    the parent's list and, unless ``description`` is given, its description; ``examples`` close its help."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples) if examples else None
    options.setdefault("description", summary[0].upper() + summary[1:] + ".")
    return group.add_parser(
        name, help=summary, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **options
    )
