"""How bash reads a recipe's command and its env values, without running anything.

Upstream (eugr/spark-vllm-docker run-recipe.py) writes the formatted command verbatim into a bash script,
and its env as `export K="{value}"`; bash then decides what runs. This module answers, exactly as bash
would for the constructs recipes use:

- `split_commands`: the simple commands a text holds. `\\<newline>` is removed (it joins lines with no
  space, also inside double quotes); an unquoted newline ends a command, so a blank line after a `\\`
  continuation, or a `# comment \\` line inside a continued command, starts a second command; `#` starts a
  comment only at the start of a word (`team#1` is one word); quotes follow bash's rules. Operators
  (`&&`, `|`, `>`) stay words, as the flag scanner expects. `$` expansions in the command are left as
  written (servegate runs the argv without a shell).
- `expand_value`: an env value as bash reads it inside `export K="value"`: quotes, escapes, `$VAR`,
  `${VAR}`, `${VAR:-word}`, `${VAR-word}`
  inside double quotes; `$(...)` and backticks are left for bash on the node.
  Tests compare both with bash itself (tests/test_upstream_semantics.py).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from servegate.errors import RecipeError

DQUOTE_ESCAPES = {"$", "`", '"', "\\"}
VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<word>[^}]*))?\}"
                 r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class SplitError(ValueError):
    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


@dataclass
class Command:
    line: int  # 0-based line of the text where the command's first word starts
    words: list[str] = field(default_factory=list)
    end_line: int = 0  # 0-based line of the newline that ended it


class _Reader:
    def __init__(self, text: str):
        self.text, self.i, self.line = text, 0, 0
        self.commands: list[Command] = []
        self.current = Command(0)
        self.word: str | None = None

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def end_word(self) -> None:
        if self.word is not None:
            if not self.current.words:
                self.current.line = self.word_line
            self.current.words.append(self.word)
            self.word = None

    def add(self, chars: str) -> None:
        if self.word is None:
            self.word, self.word_line = "", self.line
        self.word += chars

    def end_command(self) -> None:
        self.end_word()
        if self.current.words:
            self.current.end_line = self.line
            self.commands.append(self.current)
        self.current = Command(self.line)

    def single_quoted(self) -> None:
        start = self.line
        end = self.text.find("'", self.i + 1)
        if end < 0:
            raise SplitError("a single quote is never closed", start)
        body = self.text[self.i + 1:end]
        self.add(body)
        self.line += body.count("\n")
        self.i = end + 1

    def double_quoted(self) -> None:
        start = self.line
        self.add("")
        self.i += 1
        while True:
            c = self.peek()
            if c == "":
                raise SplitError("a double quote is never closed", start)
            if c == '"':
                self.i += 1
                return
            if c == "\\" and self.peek(1) == "\n":
                self.i, self.line = self.i + 2, self.line + 1
                continue
            if c == "\\" and self.peek(1) in DQUOTE_ESCAPES:
                self.add(self.peek(1))
                self.i += 2
                continue
            self.line += c == "\n"
            self.add(c)
            self.i += 1

    def step(self) -> None:
        c = self.peek()
        if c == "\\":
            nxt = self.peek(1)
            if nxt == "\n":
                self.i, self.line = self.i + 2, self.line + 1
            else:
                self.add(nxt or "\\")
                self.i += 2 if nxt else 1
        elif c == "\n":
            self.end_command()
            self.i, self.line = self.i + 1, self.line + 1
            self.current.line = self.line
        elif c in " \t":
            self.end_word()
            self.i += 1
        elif c == "#" and self.word is None:
            newline = self.text.find("\n", self.i)
            self.i = len(self.text) if newline < 0 else newline
        elif c == "'":
            self.single_quoted()
        elif c == '"':
            self.double_quoted()
        else:
            self.add(c)
            self.i += 1


def split_commands(text: str) -> list[Command]:
    """The non-empty simple commands of `text`, one per unquoted, unescaped newline-terminated line group."""
    reader = _Reader(text.replace("\r\n", "\n"))
    while reader.i < len(reader.text):
        reader.step()
    reader.end_command()
    return reader.commands


def runs_code(value: str) -> bool:
    """`$(...)` or a backtick: only bash can say what the value becomes."""
    return "$(" in value or "`" in value


DQUOTE_ESCAPES = '$`"\\\n'  # what a backslash escapes inside double quotes


def expand_value(value: str, lookup: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """`value` as bash reads it inside upstream's `export K="value"` (run-recipe.py writes
    `f'export {key}="{value}"'`): quotes inside the value end and reopen the double-quoted string and are
    removed (`{"a":1}` becomes `{a:1}`), a backslash escapes $ ` " \\ and newline inside quotes and any
    character outside, '...' outside double quotes is literal, and variables expand from `lookup`
    (unset -> ""), their values taken as they are. Returns the text and the names read.

    `$(...)` and backticks are not touched (bash on the node runs them, as upstream's would). A value whose
    quotes leave a space, a tab or an odd number of quotes outside double quotes is not one export for
    bash: ValueError says so.
    """
    if runs_code(value):
        return value, []
    names: list[str] = []
    out: list[str] = []
    quoted, pos = True, 0
    while pos < len(value):
        char = value[pos]
        if char == "\\" and pos + 1 < len(value):
            nxt = value[pos + 1]
            if not quoted or nxt in DQUOTE_ESCAPES:
                out.append("" if nxt == "\n" else nxt)
            else:
                out.append(char + nxt)
            pos += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "'" and not quoted:
            end = value.find("'", pos + 1)
            if end < 0:
                raise ValueError("an unmatched ' outside double quotes: bash reads past the end of the line")
            out.append(value[pos + 1:end])
            pos = end
        elif char == "$" and (match := VAR.match(value, pos)):
            name = match["braced"] or match["plain"]
            names.append(name)
            found = lookup(name)
            if match["op"] == ":-" and not found:
                found = match["word"]
            elif match["op"] == "-" and found is None:
                found = match["word"]
            out.append(found or "")
            pos = match.end()
            continue
        elif not quoted and char in " \t\n":
            raise ValueError("a space outside double quotes once the value's own quotes are read: bash would "
                             "split it into more than one export word")
        else:
            out.append(char)
        pos += 1
    if not quoted:
        raise ValueError('an odd number of unescaped " in the value: bash would look past the line for the '
                         "closing quote")
    return "".join(out), names


def bash_argv(rendered_command: str, recipe=None) -> list[str]:
    """Split a rendered command the way bash reads it: `\\<newline>` joined, `#` a comment only at a word's
    start, and an unquoted newline the end of the command. A second command (a blank line after a `\\`, a
    `# ... \\` line inside a continued command) is an error naming the recipe line and what bash would run."""
    where = recipe.where("command") if recipe else None
    try:
        commands = split_commands(rendered_command)
    except SplitError as exc:
        if recipe:
            where = recipe.command_line(exc.line)
        raise RecipeError(f"the rendered command cannot be split into arguments: {exc}", where=where,
                          fix="check the quotes in 'command'") from None
    if len(commands) > 1:
        raise command_split_error(rendered_command, commands, recipe)
    return commands[0].words if commands else []


def command_split_error(text: str, commands: list, recipe) -> RecipeError:
    """bash ends the command at an unescaped newline: name the line, and what bash would run instead."""
    first, second = commands[0], commands[1]
    lines = text.replace("\r\n", "\n").split("\n")
    end = first.end_line
    where = recipe.command_line(end) if recipe else None
    ending = lines[end] if end < len(lines) else ""
    if not ending.strip():
        cause = "a blank line after a '\\' continuation ends the command for bash"
    elif ending.lstrip().startswith("#"):
        cause = "a '# ...' comment line inside a continued command ends it for bash (its '\\' is comment text)"
    else:
        cause = "an unescaped newline ends the command for bash"
    runs = " ".join(shlex.quote(w) for w in first.words)[:300]
    then = "; ".join(" ".join(shlex.quote(w) for w in c.words)[:120] for c in commands[1:])
    return RecipeError(f"{cause}: bash would run `{runs}` and then, as separate command(s), `{then}` "
                       f"(command not found: {second.words[0][:60]})", where=where,
                       fix="end every continued line with '\\' and remove blank or comment lines between them "
                           "(upstream's solo/--no-ray launch filters blank lines; its Ray launch does not)")
