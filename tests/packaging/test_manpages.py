"""The man pages document what the programs' --help prints: every ckpt command has a synopsis and a
description, every option of every command is in that command's synopsis and has a paragraph of its own;
the same for ckpt-browser's options. The pages are read from their roff source (and, where groff is
installed, also rendered with its warnings on)."""

import re
import shutil
import unittest

import common
from common import packaging_file, run


def roff_text(line):
    """A roff line as the words it prints: fonts, escapes and quotes dropped."""
    line = re.sub(r"\\f(\[[^\]]*\]|.)", "", line)
    line = line.replace("\\-", "-").replace("\\&", "").replace("\\(aq", "'").replace("\\e", "\\")
    return line.replace('"', "")


def read_page(name):
    """(sections, blocks): {SECTION: [lines]} and the .SY blocks [(command, text)] of the SYNOPSIS."""
    with open(packaging_file(name), encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if not ln.startswith('.\\"')]
    sections, current = {}, None
    for ln in lines:
        if ln.startswith(".SH "):
            current = roff_text(ln[4:]).strip()
            sections[current] = []
        elif current:
            sections[current].append(ln)
    blocks = []
    for ln in sections.get("SYNOPSIS", []):
        if ln.startswith(".SY "):
            blocks.append([roff_text(ln[4:]).strip(), ""])
        elif ln.startswith(".YS"):
            continue
        elif blocks:
            blocks[-1][1] += " " + roff_text(re.sub(r"^\.\w+\s?", "", ln))
    return sections, [(c, t) for c, t in blocks]


def tags(section_lines):
    """The tags of the tagged paragraphs (.TP / .TQ: the line after the macro), as text."""
    out = []
    for i, ln in enumerate(section_lines):
        if ln.startswith((".TP", ".TQ")) and i + 1 < len(section_lines):
            out.append(roff_text(re.sub(r"^\.\w+\s?", "", section_lines[i + 1])))
    return out


def title_version(name):
    """The version in the .TH line: .TH CKPT 1 DATE "Checkpoint Browser X.Y.Z" ..."""
    with open(packaging_file(name), encoding="utf-8") as f:
        m = re.search(r'(?m)^\.TH \S+ 1 \S+ "Checkpoint Browser ([^"]+)"', f.read())
    return m.group(1) if m else None


OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def ckpt_usage(help_text):
    """{command or '': set of options} from the usage lines of `ckpt --help` (a line starting with
    'ckpt NAME', and the more indented lines that continue it)."""
    usage, current = {}, None
    for ln in help_text.splitlines():
        m = re.match(r"^\s+ckpt\s+(\S+)(.*)$", ln)
        if m:
            current = "" if m.group(1).startswith("-") else m.group(1)
            rest = ln if current == "" else m.group(2)
            # The synopsis ends where the description column starts (two spaces or more after it).
            rest = re.split(r"\S\s{2,}(?=[a-z])", rest)[0] if current else rest
            usage.setdefault(current, set()).update(OPTION.findall(rest))
        elif current is not None and re.match(r"^\s{4,}[\[-]", ln):
            usage[current].update(OPTION.findall(ln))
        else:
            current = None
    return usage


class CkptPage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        proc = run([common.ARGS.ckpt, "--help"])
        assert proc.returncode == 0, proc.stderr
        cls.help = proc.stdout
        cls.usage = ckpt_usage(cls.help)
        cls.sections, cls.synopsis = read_page("ckpt.1")

    def test_help_is_parsed(self):
        # The commands every build has, and their options: guards the parsing above.
        for command, options in (("info", {"--json"}), ("ls", {"--filter", "--json"}),
                                 ("stats", {"--bins", "--json"}), ("", {"--help", "--version"})):
            self.assertIn(command, self.usage, self.help)
            self.assertTrue(options <= self.usage[command], (command, self.usage[command]))

    def test_every_command_has_a_synopsis_and_a_description(self):
        synopsis = {c: t for c, t in self.synopsis}
        described = [t.split()[0] for t in tags(self.sections["COMMANDS"]) if t.split()]
        for command in self.usage:
            with self.subTest(command=command or "ckpt"):
                self.assertIn(("ckpt " + command).strip(), synopsis)
                if command:
                    self.assertIn(command, described)

    def test_every_option_is_in_its_synopsis_and_described(self):
        synopsis = {c: t for c, t in self.synopsis}
        described = set()
        for tag in tags(self.sections["OPTIONS"]):
            described.update(OPTION.findall(tag))
        for command, options in self.usage.items():
            listed = set(OPTION.findall(synopsis.get(("ckpt " + command).strip(), "")))
            for option in sorted(options):
                with self.subTest(command=command or "ckpt", option=option):
                    self.assertIn(option, listed, "not in the synopsis of 'ckpt %s'" % command)
                    self.assertIn(option, described, "no paragraph in OPTIONS")

    def test_version(self):
        version = run([common.ARGS.ckpt, "--version"]).stdout.split()[-1]
        self.assertEqual(title_version("ckpt.1"), version)

    def test_renders_without_warnings(self):
        if not shutil.which("groff"):
            self.skipTest("groff not installed (Debian package groff-base)")
        proc = run(["groff", "-man", "-ww", "-z", "-Tutf8", packaging_file("ckpt.1")])
        self.assertEqual((proc.returncode, proc.stderr), (0, ""))


class BrowserPage(unittest.TestCase):
    def test_every_option_is_in_the_synopsis_and_described(self):
        proc = run([common.ARGS.browser, "--help"], env=common.offscreen_env())
        self.assertEqual(proc.returncode, 0, proc.stderr)
        options = set()
        in_options = False
        for ln in proc.stdout.splitlines():
            if ln.startswith("Options:"):
                in_options = True
            elif in_options and re.match(r"^  -", ln):  # not the wrapped description lines
                options.update(OPTION.findall(re.split(r"\s{2,}", ln.strip())[0]))
            elif in_options and not ln.startswith(" "):
                in_options = False
        self.assertTrue({"--help", "--version", "--select", "--page", "--screenshot"} <= options, proc.stdout)
        sections, synopsis = read_page("ckpt-browser.1")
        listed = set()
        for _, text in synopsis:
            listed.update(OPTION.findall(text))
        described = set()
        for tag in tags(sections["OPTIONS"]):
            described.update(OPTION.findall(tag))
        for option in sorted(options):
            with self.subTest(option=option):
                self.assertIn(option, listed, "not in the synopsis")
                self.assertIn(option, described, "no paragraph in OPTIONS")

    def test_version(self):
        proc = run([common.ARGS.browser, "--version"], env=common.offscreen_env())
        self.assertEqual(title_version("ckpt-browser.1"), proc.stdout.split()[-1])

    def test_renders_without_warnings(self):
        if not shutil.which("groff"):
            self.skipTest("groff not installed (Debian package groff-base)")
        proc = run(["groff", "-man", "-ww", "-z", "-Tutf8", packaging_file("ckpt-browser.1")])
        self.assertEqual((proc.returncode, proc.stderr), (0, ""))


if __name__ == "__main__":
    common.main()
