"""Plain-text --help for every command: docstrings are written for Sphinx, --help for a terminal.

``PlainHelpFormatter`` keeps the description's and epilog's line breaks (as argparse's
RawDescriptionHelpFormatter) and strips reST markup from them and from each option's help:
literals in backquotes, roles such as :func:`name`, *emphasis* and table rules of '='.
"""
from __future__ import annotations

import argparse
import re

ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
LITERAL = re.compile(r"``([^`]+)``")
INTERPRETED = re.compile(r"`([^`\n]+)`")
EMPHASIS = re.compile(r"(?<![\w*])\*(\w[^*\n]*?)\*(?![\w*])")
TABLE_RULE = re.compile(r"^[= ]*=[= ]*$", re.M)


def plain_text(text: str) -> str:
    """``text`` with reST inline markup removed and '=' table rules drawn with '-'."""
    text = ROLE.sub(r"\1", text)
    text = LITERAL.sub(r"\1", text)
    text = INTERPRETED.sub(r"\1", text)
    text = EMPHASIS.sub(r"\1", text)
    return TABLE_RULE.sub(lambda rule: rule.group(0).replace("=", "-"), text)


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """RawDescriptionHelpFormatter that prints plain text (see the module docstring)."""

    def _fill_text(self, text, width, indent):
        return super()._fill_text(plain_text(text), width, indent)

    def _split_lines(self, text, width):
        return super()._split_lines(plain_text(text), width)
