"""The desktop file and the AppStream metainfo: valid for the freedesktop tools, and consistent with each other
and with the MIME definitions and icons that are installed beside them."""

import os
import re
import unittest
import xml.etree.ElementTree as ET

import common
from common import APP_ID, packaging_file, need_tool, run

MIME_NS = "{http://www.freedesktop.org/standards/shared-mime-info}"
# Types of shared-mime-info itself that the program opens (Keras 2 .h5 is HDF5); x-hdf5 is the name newer
# shared-mime-info releases give HDF5.
FOREIGN_TYPES = {"application/x-hdf", "application/x-hdf5"}


def desktop_entry():
    entry = {}
    with open(packaging_file(APP_ID + ".desktop"), encoding="utf-8") as f:
        group = None
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("["):
                group = line
            elif group == "[Desktop Entry]" and "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                entry[k] = v
    return entry


def own_mime_types():
    root = ET.parse(packaging_file(APP_ID + ".mime.xml")).getroot()
    return {mt.get("type") for mt in root.findall(MIME_NS + "mime-type")}


class DesktopFile(unittest.TestCase):
    def test_validates(self):
        tool = need_tool(self, "desktop-file-validate", "desktop-file-utils")
        proc = run([tool, packaging_file(APP_ID + ".desktop")])
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        # Warnings and hints too: a clean file prints nothing.
        self.assertEqual(proc.stdout + proc.stderr, "")

    def test_opens_files_by_type(self):
        e = desktop_entry()
        self.assertEqual(e["Type"], "Application")
        exec_args = e["Exec"].split()
        self.assertEqual(exec_args[0], "ckpt-browser")
        self.assertTrue({"%F", "%f"} & set(exec_args[1:]), "Exec passes no file: %r" % e["Exec"])
        self.assertEqual(e["Icon"], APP_ID)
        listed = [t for t in e["MimeType"].split(";") if t]
        self.assertEqual(len(listed), len(set(listed)), "a type listed twice")
        self.assertEqual(set(listed), own_mime_types() | FOREIGN_TYPES)


class Metainfo(unittest.TestCase):
    def test_validates(self):
        tool = need_tool(self, "appstreamcli", "appstream")
        proc = run([tool, "validate", "--no-net", "--explain", packaging_file(APP_ID + ".metainfo.xml")])
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        # Errors fail above; warnings (W:) fail here. Infos and pedantic notes may stay (the reverse-DNS id
        # has upper-case letters, which AppStream only frowns upon).
        self.assertNotRegex(proc.stdout, r"(?m)^[EW]: ", proc.stdout)

    def test_consistent_with_desktop_file_and_mime(self):
        root = ET.parse(packaging_file(APP_ID + ".metainfo.xml")).getroot()
        self.assertEqual(root.get("type"), "desktop-application")
        self.assertEqual(root.findtext("id"), APP_ID)
        self.assertEqual(root.find("launchable").text, APP_ID + ".desktop")
        provided = {m.text for m in root.iter("mediatype")}
        self.assertEqual(provided, own_mime_types() | {"application/x-hdf"})
        self.assertEqual({b.text for b in root.iter("binary")}, {"ckpt", "ckpt-browser"})
        self.assertIsNotNone(root.find("content_rating"))
        self.assertTrue(root.findall("releases/release"), "no release")
        # The first release is the project's version (CMakeLists.txt project(... VERSION x.y.z)).
        with open(os.path.join(common.ARGS.source_dir, "CMakeLists.txt"), encoding="utf-8") as f:
            version = re.search(r"project\(\w+ VERSION ([0-9.]+)", f.read()).group(1)
        self.assertEqual(root.find("releases/release").get("version"), version)

    def test_screenshots_are_in_the_repository(self):
        root = ET.parse(packaging_file(APP_ID + ".metainfo.xml")).getroot()
        images = [i.text for i in root.iter("image")]
        self.assertTrue(images)
        prefix = "https://raw.githubusercontent.com/checkpoint-browser/checkpoint-browser/main/"
        for url in images:
            self.assertTrue(url.startswith(prefix), url)
            path = os.path.join(common.ARGS.source_dir, url[len(prefix):])
            self.assertTrue(os.path.isfile(path), "%s: no %s in the repository" % (url, path))
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", path)


class Icons(unittest.TestCase):
    def test_rendered_sizes(self):
        icons = packaging_file("icons")
        with open(os.path.join(icons, APP_ID + ".svg"), encoding="utf-8") as f:
            self.assertIn("<svg", f.read())
        for size in (16, 22, 24, 32, 48, 64, 128, 256):
            path = os.path.join(icons, "hicolor", "%dx%d" % (size, size), "apps", APP_ID + ".png")
            with open(path, "rb") as f:
                head = f.read(24)
            self.assertEqual(head[:8], b"\x89PNG\r\n\x1a\n", path)
            width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            self.assertEqual((width, height), (size, size), path)


if __name__ == "__main__":
    common.main()
