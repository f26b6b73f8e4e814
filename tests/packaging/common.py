"""Shared helpers for the packaging tests.

Each test module runs on its own, e.g.:

    /usr/bin/python3 tests/packaging/test_deb.py --source-dir . --build-dir build/dev --workdir /tmp/ckpt-pkg
"""

import argparse
import os
import shutil
import subprocess
import sys
import unittest

APP_ID = "io.github.checkpointbrowser.CheckpointBrowser"
ARGS = None  # source_dir, build_dir, workdir, ckpt, browser, plugin, cpack


def main():
    global ARGS
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--ckpt", default="")
    parser.add_argument("--browser", default="")
    parser.add_argument("--plugin", default="", help="the LibTorch plugin, where the build made one")
    parser.add_argument("--cpack", default="", help="cpack of the CMake that configured the build")
    args, rest = parser.parse_known_args()
    for k in ("source_dir", "build_dir", "workdir", "ckpt", "browser", "plugin", "cpack"):
        v = getattr(args, k)
        setattr(args, k, os.path.abspath(v) if v else "")
    if os.path.isdir(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    ARGS = args
    unittest.main(module="__main__", argv=[sys.argv[0]] + rest, verbosity=2)


def packaging_file(name):
    return os.path.join(ARGS.source_dir, "packaging", name)


def workfile(*parts):
    return os.path.join(ARGS.workdir, *parts)


def need_tool(test, tool, package):
    """The path of `tool`; fails the test naming the Debian package when it is missing."""
    path = shutil.which(tool)
    if not path:
        test.fail("%s not found: install the Debian package %s" % (tool, package))
    return path


def run(cmd, timeout=120, env=None, cwd=None):
    return subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=env, cwd=cwd, universal_newlines=True)


def offscreen_env(**extra):
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    runtime = os.path.join(ARGS.workdir, "runtime")
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    env.setdefault("XDG_RUNTIME_DIR", runtime)
    env.pop("CKPT_TORCHSTATS", None)
    env.update(extra)
    return env
