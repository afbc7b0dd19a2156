"""Formatting of the demos' printed summaries."""
import textwrap

WIDTH = 100


def join(lines):
    """Join summary lines, wrapping long ones at WIDTH under their own indentation (+4)."""
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()))
        out.append(textwrap.fill(line, WIDTH, subsequent_indent=indent + "    ")
                   if len(line) > WIDTH else line)
    return "\n".join(out)
