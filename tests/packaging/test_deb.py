"""The Debian package: cpack builds it from the build tree; its contents are the programs, the plugin and the
desktop files; its Depends are exactly the packages that own the libraries its ELF files link (found here
with readelf, ldconfig and dpkg -S, independently of dpkg-shlibdeps) plus the run-time-only ones; and the
programs extracted from it (dpkg-deb -x into a temporary root) run: ckpt info on a checkpoint written by
PyTorch, statistics through the plugin installed beside them, and ckpt-browser FILE opening that file."""

import glob
import json
import os
import re
import shutil
import time
import unittest

import torch

import common
from common import APP_ID, need_tool, run, workfile

# Used at run time without being linked: the icon theme the icons go into, the MIME database our types go into.
RUNTIME_ONLY = {"hicolor-icon-theme", "shared-mime-info"}
PLUGIN = "usr/lib/checkpoint-browser/libckpt_torchstats.so"


def depends_names(field):
    """Package names of a Depends field ('a (>= 1), b | c' -> {'a', 'b | c'})."""
    out = set()
    for item in field.split(","):
        alts = [re.sub(r"\s*\(.*?\)", "", a).strip() for a in item.split("|")]
        out.add(" | ".join(a for a in alts if a))
    return {d for d in out if d}


def library_paths():
    """{soname: path} of the x86-64 libraries ldconfig knows."""
    out = {}
    for ln in run(["/sbin/ldconfig", "-p"]).stdout.splitlines()[1:]:
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", ln)
        if m and ("x86-64" in m.group(2) or "64bit" in m.group(2)):
            out.setdefault(m.group(1), m.group(3))
    return out


def owner(path):
    """The Debian package that owns a library file (trying the /usr-merged spellings of its path)."""
    real = os.path.realpath(path)
    candidates = []
    for p in (path, real):
        candidates += [p, p[4:] if p.startswith("/usr/") else "/usr" + p]
    for p in candidates:
        proc = run(["dpkg", "-S", p])
        if proc.returncode == 0:
            return proc.stdout.split(":")[0].strip()
    return None


class DebianPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = workfile("cpack")
        os.makedirs(cls.out)
        config = os.path.join(common.ARGS.build_dir, "CPackConfig.cmake")
        proc = run([common.ARGS.cpack or "cpack", "-G", "DEB", "--config", config, "-B", cls.out], timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        debs = glob.glob(os.path.join(cls.out, "*.deb"))
        assert len(debs) == 1, (debs, proc.stdout)
        cls.deb = debs[0]
        cls.root = workfile("root")
        proc = run(["dpkg-deb", "-x", cls.deb, cls.root])
        assert proc.returncode == 0, proc.stderr
        cls.has_plugin = bool(common.ARGS.plugin)

    def field(self, name):
        proc = run(["dpkg-deb", "-f", self.deb, name])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc.stdout.strip()

    def test_control(self):
        need_tool(self, "dpkg-deb", "dpkg")
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(os.path.basename(self.deb), "checkpoint-browser_%s_%s.deb" % (self.field("Version"), arch))
        self.assertEqual(self.field("Package"), "checkpoint-browser")
        self.assertEqual(self.field("Architecture"), arch)
        info = run(["dpkg-deb", "-I", self.deb]).stdout
        # Summary, then the extended description indented by one space, its paragraphs separated by " .".
        self.assertRegex(info, r"Description: Inspect model checkpoints without loading or executing them\n"
                               r"  Checkpoint Browser shows what a model checkpoint holds")
        self.assertEqual(info.count("Inspect model checkpoints"), 1, info)
        self.assertIn("\n  .\n  It reads PyTorch", info)

    def test_contents(self):
        proc = run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        files = {ln.split()[-1].lstrip("./") for ln in proc.stdout.splitlines() if not ln.endswith("/")}
        expected = {
            "usr/bin/ckpt", "usr/bin/ckpt-browser",
            "usr/share/applications/%s.desktop" % APP_ID,
            "usr/share/metainfo/%s.metainfo.xml" % APP_ID,
            "usr/share/mime/packages/%s.xml" % APP_ID,
            "usr/share/icons/hicolor/scalable/apps/%s.svg" % APP_ID,
            "usr/share/man/man1/ckpt.1.gz", "usr/share/man/man1/ckpt-browser.1.gz",
        }
        expected |= {"usr/share/icons/hicolor/%dx%d/apps/%s.png" % (s, s, APP_ID)
                     for s in (16, 22, 24, 32, 48, 64, 128, 256)}
        if self.has_plugin:
            expected.add(PLUGIN)
        self.assertEqual(files, expected)
        # Stripped: no debugging sections in the programs.
        for f in ("usr/bin/ckpt", "usr/bin/ckpt-browser"):
            sections = run(["readelf", "-S", os.path.join(self.root, f)]).stdout
            self.assertNotIn(".debug_info", sections, f)

    def test_installed_tree_validates(self):
        """AppStream's check of an installed tree: the metainfo with the desktop file it launches."""
        tool = need_tool(self, "appstreamcli", "appstream")
        proc = run([tool, "validate-tree", "--no-net", "--explain", self.root])
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn(APP_ID + ".metainfo.xml", proc.stdout)
        self.assertNotRegex(proc.stdout, r"(?m)^[EW]: ", proc.stdout)

    def test_depends_are_exactly_what_the_files_link(self):
        declared = depends_names(self.field("Depends"))
        libs = library_paths()
        needed, packages = set(), set()
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                dyn = run(["readelf", "-d", path]).stdout
                needed |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
        self.assertTrue(needed)
        for soname in sorted(needed):
            with self.subTest(library=soname):
                self.assertIn(soname, libs, "ldconfig does not know %s" % soname)
                pkg = owner(libs[soname])
                self.assertIsNotNone(pkg, "no package owns %s" % libs[soname])
                packages.add(pkg)
        if self.has_plugin:
            self.assertTrue(any(p.startswith("libtorch") for p in packages), packages)
        self.assertEqual(declared, packages | RUNTIME_ONLY)

    def test_double_click_opens_the_file(self):
        """What a file manager does on a double-click, through GIO: the type of the file, the application
        registered for it (the package's desktop file, in a data directory holding only the package's share/
        and the system's MIME types), then that desktop file's Exec line with the file. ckpt-browser on PATH
        is a script that records its arguments and runs the packaged program with --quit-when-ready."""
        gio = need_tool(self, "gio", "libglib2.0-bin")
        data = workfile("xdg", "data")
        shutil.copytree(os.path.join(self.root, "usr", "share", "applications"), os.path.join(data, "applications"))
        shutil.copytree(os.path.join(self.root, "usr", "share", "mime"), os.path.join(data, "mime"))
        shutil.copy("/usr/share/mime/packages/freedesktop.org.xml", os.path.join(data, "mime", "packages"))
        for cmd in ([need_tool(self, "update-mime-database", "shared-mime-info"), os.path.join(data, "mime")],
                    [need_tool(self, "update-desktop-database", "desktop-file-utils"),
                     os.path.join(data, "applications")]):
            proc = run(cmd)
            self.assertEqual(proc.returncode, 0, proc.stderr)
        bindir, log = workfile("xdg", "bin"), workfile("xdg", "launched.log")
        os.makedirs(bindir)
        with open(os.path.join(bindir, "ckpt-browser"), "w") as f:
            f.write('#!/bin/sh\necho "args: $*" >> "%s"\n' % log)
            f.write('exec "%s" --report-ready --quit-when-ready "$@" >> "%s" 2>&1\n'
                    % (os.path.join(self.root, "usr", "bin", "ckpt-browser"), log))
        os.chmod(os.path.join(bindir, "ckpt-browser"), 0o755)
        path = workfile("double click.pt")
        torch.save({"w": torch.ones(3)}, path)

        env = common.offscreen_env(XDG_DATA_HOME=workfile("xdg", "home"), XDG_DATA_DIRS=data,
                                   XDG_CURRENT_DESKTOP="GNOME", PATH=bindir + os.pathsep + os.environ["PATH"])
        for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
            env.pop(var, None)
        self.assertEqual(run(["xdg-mime", "query", "default", "application/x-pytorch"], env=env).stdout.strip(),
                         APP_ID + ".desktop")
        proc = run([gio, "open", path], env=env)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline and "ready" not in text:
            time.sleep(0.2)
            if os.path.exists(log):
                with open(log, encoding="utf-8", errors="replace") as f:
                    text = f.read()
        self.assertIn("args: %s\n" % path, text)
        self.assertRegex(text, r"(?m)^ready ok \d+ ms")

    def test_installs_on_a_clean_system(self):
        """apt resolves the package against the archive as if nothing were installed (an empty dpkg status):
        every dependency, and each of theirs, exists in the distribution's archive."""
        policy = run(["apt-cache", "policy", "libc6"]).stdout
        if "Candidate:" not in policy or "Candidate: (none)" in policy:
            self.skipTest("no package lists (run apt-get update first)")
        status = workfile("empty-status")
        open(status, "w").close()
        proc = run(["apt-get", "-s", "-o", "Dir::State::status=" + status, "install", "--no-install-recommends",
                    self.deb], timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr)
        self.assertRegex(proc.stdout, r"(?m)^Inst checkpoint-browser ")
        self.assertRegex(proc.stdout, r"(?m)^Inst libqt6gui6 ")
        self.assertNotRegex(proc.stderr, r"(?m)^E:", proc.stderr)

    def test_installed_ckpt_reads_a_checkpoint(self):
        path = workfile("model.pt")
        sd = {"encoder.weight": torch.randn(4, 3), "encoder.bias": torch.zeros(4, dtype=torch.float64),
              "step": torch.tensor(7)}
        torch.save(sd, path)
        ckpt = os.path.join(self.root, "usr", "bin", "ckpt")
        proc = run([ckpt, "ls", path, "--json"], env=common.offscreen_env())
        self.assertEqual(proc.returncode, 0, proc.stderr)
        ls = json.loads(proc.stdout)
        self.assertEqual(ls["format"], "pytorch-zip")
        got = [(t["name"], t["dtype"], t["shape"]) for t in ls["tensors"]]
        want = [(k, str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in sd.items()]
        self.assertEqual(got, want)
        proc = run([ckpt, "info", path], env=common.offscreen_env())
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, r"Tensors\s+3\b")

    def test_installed_ckpt_loads_the_installed_plugin(self):
        if not self.has_plugin:
            self.skipTest("the build has no LibTorch plugin")
        # One float32 tensor large enough for the plugin to be loaded (2^25 elements), all zeros: a sparse
        # safetensors file, so that it costs no disk.
        n = 1 << 25
        header = json.dumps({"zeros": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
        header += b" " * (-len(header) % 8)
        path = workfile("zeros.safetensors")
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header)
            f.truncate(8 + len(header) + 4 * n)
        ckpt = os.path.join(self.root, "usr", "bin", "ckpt")
        proc = run([ckpt, "stats", path, "--json", "--bins", "4"], env=common.offscreen_env(LD_DEBUG="files"),
                   timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        # The dynamic loader's trace names every library it initialises; the plugin's must be the one in root.
        inits = re.findall(r"calling init: (\S*libckpt_torchstats\.so)\s", proc.stderr)
        loaded = {os.path.realpath(p) for p in inits}
        self.assertEqual(loaded, {os.path.realpath(os.path.join(self.root, PLUGIN))})
        stats = json.loads(proc.stdout)["tensors"][0]
        self.assertEqual((stats["count"], stats["zeros"], stats["min"], stats["max"]), (n, n, 0, 0))

    def test_installed_browser_opens_the_file_it_is_given(self):
        path = workfile("window.pt")
        torch.save({"w": torch.ones(2, 2)}, path)
        browser = os.path.join(self.root, "usr", "bin", "ckpt-browser")
        proc = run([browser, path, "--report-ready", "--quit-when-ready"], env=common.offscreen_env(), timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertRegex(proc.stdout, r"^ready ok \d+ ms")
        # And a file that is not a checkpoint fails to open rather than showing an empty window.
        with open(workfile("not_a_checkpoint.pt"), "wb") as f:
            f.write(b"hello")
        proc = run([browser, workfile("not_a_checkpoint.pt"), "--report-ready", "--quit-when-ready"],
                   env=common.offscreen_env(), timeout=120)
        self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
        self.assertRegex(proc.stdout, r"^ready failed")


if __name__ == "__main__":
    common.main()
