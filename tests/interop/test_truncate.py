"""A checkpoint truncated, or saved over by torch.save, while `ckpt` has it open and is reading its tensors
(a training job saving over its checkpoint): ckpt never dies of SIGBUS, the statistics it prints are those
of the file it opened, never of the new one, and a tensor read after the change is an error naming the file
and saying it was truncated or modified on disk. The file holds two float32 tensors of 32M elements
(LibTorch's statistics path, reading the mapping on its worker threads) and small ones (the portable path);
torch.save writes it, torch.load gives the expected values. The moment of the change is spread over the
run time measured first, so some runs are cut short mid-way."""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, workfile  # noqa: E402

import torch  # noqa: E402

MESSAGE = re.compile(r"the file was (truncated|modified) on disk (after it was opened|while its data was "
                     r"being read); reload it")


class TruncateTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pristine = workfile("pristine.pt")
        n = 1 << 25
        sd = {"a.small": torch.arange(12, dtype=torch.float32) / 8,
              "b.big": (torch.arange(n, dtype=torch.float32) % 1000) * 0.25,
              "c.small": torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64),
              "d.big": (torch.arange(n, dtype=torch.float32) % 777) * -0.5,
              "e.small": torch.arange(5, dtype=torch.int64)}
        torch.save(sd, cls.pristine)
        cls.expected = {k: (float(v.min()), float(v.max()), v.numel()) for k, v in sd.items()}
        del sd

    def run_stats(self, path, cut_after=None, size_after=4096, change=None):
        """ckpt stats --json on `path`; truncates it to `size_after` bytes (or calls `change`) `cut_after`
        seconds after the start. Returns (returncode, stdout JSON or None, stderr text)."""
        proc = subprocess.Popen([common.CKPT, "stats", path, "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if cut_after is not None:
            time.sleep(cut_after)
            if change:
                change()
            else:
                os.truncate(path, size_after)
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.fail("ckpt hung on a file truncated under it")
        self.assertGreaterEqual(proc.returncode, 0, "ckpt died with signal %d: %s"
                                % (-proc.returncode, err.decode(errors="replace")[-2000:]))
        js = common.parse_json_strict(self, out, ("stats", path)) if out.strip() else None
        return proc.returncode, js, err.decode(errors="replace")

    def check_outcome(self, path, rc, js, err):
        """Either all right, or an error for the file; what was printed is right."""
        if rc == 0:
            self.assertEqual(err.strip(), "")
        else:
            self.assertEqual(rc, 2, err)
            self.assert_error_output(subprocess.CompletedProcess([], rc, b"", err.encode()), path)
        if js is None:      # refused before any tensor (the cut came while opening)
            self.assertNotEqual(rc, 0)
            return 0
        read = 0
        for e in js["tensors"]:
            if "error" in e:
                self.assertRegex(e["error"], MESSAGE)
                self.assertIn("%s: %s" % (path, e["name"]), err)
                continue
            read += 1
            lo, hi, n = self.expected[e["name"]]
            self.assertEqual(e["count"], n)
            self.assertEqual((e["min"], e["max"]), (lo, hi), e["name"])
        return len(js["tensors"]) - read

    def test_truncated_while_reading(self):
        path = workfile("race.pt")
        shutil.copy(self.pristine, path)
        t0 = time.time()
        rc, js, err = self.run_stats(path)
        full = time.time() - t0
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.check_outcome(path, rc, js, err), 0)
        cut_short = 0
        for frac in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
            with self.subTest(cut_at=frac):
                shutil.copy(self.pristine, path)
                rc, js, err = self.run_stats(path, cut_after=full * frac)
                errors = self.check_outcome(path, rc, js, err)
                if rc != 0 and js is not None and errors < len(self.expected):
                    cut_short += 1    # some tensors read, then the truncation caught
        print("runs cut short mid-way: %d of 7 (full run %.2f s)" % (cut_short, full), file=sys.stderr)

    def test_saved_over_while_reading(self):
        # torch.save over the open file, as a training job does: it truncates the file, then writes the new
        # checkpoint, as large as the old one, with other values at the same offsets. Every statistic ckpt
        # prints is of the file it opened (the new values never appear); the tensors it reads after the
        # save began are errors.
        path = workfile("saved_over.pt")
        n = 1 << 25
        newer = {"a.small": torch.full((12,), 1000.0),
                 "b.big": torch.full((n,), 2000.0),
                 "c.small": torch.full((3,), 3000.0, dtype=torch.float64),
                 "d.big": torch.full((n,), 4000.0),
                 "e.small": torch.full((5,), 5000, dtype=torch.int64)}
        shutil.copy(self.pristine, path)
        t0 = time.time()
        rc, js, err = self.run_stats(path)
        full = time.time() - t0
        self.assertEqual(rc, 0, err)
        changed = 0
        for frac in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
            with self.subTest(save_at=frac):
                shutil.copy(self.pristine, path)
                rc, js, err = self.run_stats(path, cut_after=full * frac,
                                             change=lambda: torch.save(newer, path))
                if self.check_outcome(path, rc, js, err) > 0:
                    changed += 1
        print("runs that read tensors after the save began: %d of 7 (full run %.2f s)" % (changed, full),
              file=sys.stderr)
        # Once saved over, every tensor of the file as opened is an error, whichever path reads it.
        self.assertGreater(changed, 0)


if __name__ == "__main__":
    common.main()
