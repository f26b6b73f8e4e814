"""ckpt diff against PyTorch: a small model trained for a few epochs with real PyTorch, one checkpoint per epoch
(model and optimizer, torch.save); every figure of `ckpt diff --json` between two epochs is checked against the
same figure computed by PyTorch in float64 from torch.load of the same files. Then the cases users meet: a
`module.`-prefixed copy, a copy with one tensor changed, a .bin and a safetensors copy of the same weights,
float32 against float16, added / removed / reshaped / moved tensors, strided storage, thresholds, prefixes given
by hand, exit statuses and errors."""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CkptTestCase, flatten, flatten_values, workfile  # noqa: E402
import test_safetensors  # noqa: E402  (its write_safetensors writes files byte by byte from the spec)

import torch  # noqa: E402
import torch.serialization  # noqa: E402

EPOCHS = 4
FIGURES = ("max_abs", "mean_abs", "rel_l2", "cosine", "changed_fraction")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Sequential(torch.nn.Linear(4 * 6 * 6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(x.flatten(1))


def train_run(folder):
    """Trains Net for EPOCHS epochs with Adam and a step LR schedule; saves ckpt_epoch_N.pt after each."""
    torch.manual_seed(1234)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 3, (64,))
    paths = []
    for epoch in range(1, EPOCHS + 1):
        for i in range(0, 64, 16):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[i:i + 16]), y[i:i + 16])
            loss.backward()
            opt.step()
        sched.step()
        path = os.path.join(folder, "ckpt_epoch_%02d.pt" % epoch)
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "lr": sched.get_last_lr()[0], "loss": float(loss)}, path)
        paths.append(path)
    return paths


def ref_figures(a, b, threshold=0.0):
    """The figures of docs/cli.md in float64, computed by PyTorch."""
    a = a.detach().to(torch.float64).reshape(-1)
    b = b.detach().to(torch.float64).reshape(-1)
    d = b - a
    ad = d.abs()
    na, nb = a.norm(), b.norm()
    if float(na) == 0:
        rel = 0.0 if float(d.norm()) == 0 else math.inf
    else:
        rel = float(d.norm() / na)
    if float(na) == 0 and float(nb) == 0:
        cos = 1.0
    elif float(na) == 0 or float(nb) == 0:
        cos = 0.0
    else:
        cos = float((a * b).sum() / (na * nb))
    return {"max_abs": float(ad.max()) if ad.numel() else 0.0,
            "mean_abs": float(ad.mean()) if ad.numel() else 0.0,
            "rel_l2": rel, "cosine": cos,
            "changed_fraction": float((ad > threshold).to(torch.float64).mean()) if ad.numel() else 0.0}


def device_of(t):
    return "cpu"


def json_value(v):
    """A Python leaf as ckpt's JSON writes it."""
    if isinstance(v, tuple):
        return [json_value(x) for x in v]
    if isinstance(v, list):
        return [json_value(x) for x in v]
    return v


def save_with_tags(obj, path, tag_of):
    original = torch.serialization.location_tag
    try:
        torch.serialization.location_tag = tag_of
        torch.save(obj, path)
    finally:
        torch.serialization.location_tag = original


def safetensors_from(sd, path):
    dt = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.float64: "F64"}
    test_safetensors.write_safetensors(
        path, {k: (dt[v.dtype], tuple(v.shape), common.contiguous_bytes(v)) for k, v in sd.items()})


class DiffTest(CkptTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run = workfile("run")
        os.makedirs(run, exist_ok=True)
        cls.epochs = train_run(run)
        cls.loaded = [torch.load(p) for p in cls.epochs]

    # ---- helpers -----------------------------------------------------------------------------------------------

    def diff(self, a, b, *extra, rc=1):
        return self.ckpt_json("diff", a, b, *extra, expect_rc=rc)

    def assert_close(self, got, want, what):
        if want is None or (isinstance(want, float) and not math.isfinite(want)):
            self.assertIsNone(got, what)
            return
        self.assertIsNotNone(got, what)
        self.assertTrue(math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-13),
                        "%s: ckpt %r, PyTorch %r" % (what, got, want))

    def check_against_torch(self, got, obj_a, obj_b, threshold=0.0, tensor_kinds=None):
        """Every tensor, value and count of a diff whose names match as they are, against PyTorch."""
        ta, tb = dict(flatten(obj_a)), dict(flatten(obj_b))
        self.assertEqual(sorted(got["removed"]), sorted(set(ta) - set(tb)))
        self.assertEqual(sorted(got["added"]), sorted(set(tb) - set(ta)))
        changed = {c["name"]: c for c in got["changed"]}
        self.assertEqual(len(changed), len(got["changed"]), "a name listed twice")
        identical = 0
        for name in sorted(set(ta) & set(tb)):
            a, b = ta[name], tb[name]
            if a.shape != b.shape:
                self.assertIn(name, changed)
                self.assertEqual(changed[name]["kind"], "shape", name)
                for f in FIGURES:
                    self.assertIsNone(changed[name][f], name)
                continue
            ref = ref_figures(a, b, threshold)
            kind = "dtype" if a.dtype != b.dtype else "values" if ref["max_abs"] > threshold else None
            if tensor_kinds and name in tensor_kinds:
                kind = tensor_kinds[name]
            if kind is None:
                self.assertNotIn(name, changed, "%s: PyTorch finds no change" % name)
                identical += 1
                continue
            self.assertIn(name, changed, "%s: PyTorch finds a change (max_abs %r)" % (name, ref["max_abs"]))
            self.assertEqual(changed[name]["kind"], kind, name)
            for f in FIGURES:
                self.assert_close(changed[name][f], ref[f], "%s %s" % (name, f))
        self.assertEqual(got["identical"], identical)
        self.assertEqual(len(changed), len(set(ta) & set(tb)) - identical)
        # changed is sorted by the size of the change: relative L2, largest first
        rels = [c["rel_l2"] if c["rel_l2"] is not None else math.inf for c in got["changed"]]
        self.assertEqual(rels, sorted(rels, reverse=True))
        # non-tensor values
        va = {n: v for n, _, v in flatten_values(obj_a)}
        vb = {n: v for n, _, v in flatten_values(obj_b)}
        want = {}
        for n in set(va) | set(vb):
            if n not in vb:
                want[n] = (json_value(va[n]), None)
            elif n not in va:
                want[n] = (None, json_value(vb[n]))
            elif json_value(va[n]) != json_value(vb[n]):
                want[n] = (json_value(va[n]), json_value(vb[n]))
        got_values = {v["name"]: (v["a"], v["b"]) for v in got["values_changed"]}
        self.assertEqual(got_values, want)

    # ---- a training run ----------------------------------------------------------------------------------------

    def test_epochs_every_figure_against_pytorch(self):
        for i, j in ((1, 2), (0, 3)):
            got = self.diff(self.epochs[i], self.epochs[j])
            self.assertEqual(got["a"], self.epochs[i])
            self.assertEqual(got["b"], self.epochs[j])
            self.assertEqual(got["alignment"]["rule"], "identity")
            self.check_against_torch(got, self.loaded[i], self.loaded[j])
            # Every weight moved, and so did the optimizer's moments; the BatchNorm counter too.
            names = {c["name"] for c in got["changed"]}
            for n in ("model.conv.weight", "model.head.2.bias", "optimizer.state.0.exp_avg",
                      "model.bn.num_batches_tracked"):
                self.assertIn(n, names)
            values = {v["name"] for v in got["values_changed"]}
            self.assertIn("epoch", values)
            self.assertIn("lr", values)
            self.assertIn("optimizer.param_groups.0.lr", values)

    def test_epoch_values_changed(self):
        got = self.diff(self.epochs[0], self.epochs[1])
        by_name = {v["name"]: v for v in got["values_changed"]}
        self.assertEqual((by_name["epoch"]["a"], by_name["epoch"]["b"]), (1, 2))
        self.assertEqual((by_name["lr"]["a"], by_name["lr"]["b"]), (0.005, 0.0025))
        self.assertEqual(by_name["epoch"]["status"], "changed")
        self.assertNotIn("optimizer.param_groups.0.betas", by_name)  # unchanged values are not listed

    def test_module_aggregates(self):
        """Module figures are the figures of all the module's tensors taken together."""
        got = self.diff(self.epochs[1], self.epochs[2])
        mods = {m["name"]: m for m in got["modules"]}
        ta, tb = dict(flatten(self.loaded[1])), dict(flatten(self.loaded[2]))
        for module in ("model.head", "model.bn", "model", "optimizer.state"):
            names = [n for n in ta if n.startswith(module + ".")]
            a = torch.cat([ta[n].double().reshape(-1) for n in names])
            b = torch.cat([tb[n].double().reshape(-1) for n in names])
            ref = ref_figures(a, b)
            self.assertEqual(mods[module]["tensors"], len(names), module)
            for f in FIGURES:
                self.assert_close(mods[module][f], ref[f], "%s %s" % (module, f))
        rels = [m["rel_l2"] for m in got["modules"]]
        self.assertEqual(rels, sorted(rels, reverse=True))

    def test_text_report(self):
        proc = self.run_ckpt("diff", self.epochs[1], self.epochs[2])
        self.assertEqual(proc.returncode, 1)
        out = proc.stdout.decode()
        got = self.diff(self.epochs[1], self.epochs[2])
        top = got["changed"][0]["name"]
        self.assertIn("Alignment: names match as they are", out)
        self.assertIn("Changed (largest relative change first):\n  name", out)
        changed_block = out.split("Changed (largest relative change first):\n")[1]
        self.assertEqual(changed_block.split("\n")[1].split()[0], top)
        self.assertIn("Values changed:\n", out)
        self.assertIn("  epoch: 2 -> 3\n", out)
        self.assertIn("Modules that moved most:", out)

    def test_same_file_identical(self):
        got = self.diff(self.epochs[2], self.epochs[2], rc=0)
        n = len(flatten(self.loaded[2]))
        self.assertEqual(got["identical"], n)
        self.assertEqual((got["changed"], got["added"], got["removed"], got["values_changed"]), ([], [], [], []))
        proc = self.run_ckpt("diff", self.epochs[2], self.epochs[2])
        self.assertEqual(proc.returncode, 0)
        self.assertIn("No differences.", proc.stdout.decode())

    # ---- alignment -----------------------------------------------------------------------------------------------

    def test_module_prefixed_copy_is_identical(self):
        sd = self.loaded[2]["model"]
        plain, wrapped = workfile("plain_sd.pt"), workfile("ddp_sd.pt")
        torch.save(sd, plain)
        torch.save({"module." + k: v for k, v in sd.items()}, wrapped)
        for a, b, pa, pb in ((plain, wrapped, "", "module."), (wrapped, plain, "module.", "")):
            got = self.diff(a, b, rc=0)
            al = got["alignment"]
            self.assertEqual((al["rule"], al["prefix_a"], al["prefix_b"]), ("prefix", pa, pb))
            self.assertEqual((al["matched"], al["matched_by_name"]), (len(sd), 0))
            self.assertIn("module.", al["description"])
            self.assertEqual(got["identical"], len(sd))
            self.assertEqual((got["changed"], got["added"], got["removed"]), ([], [], []))

    def test_prefix_inside_a_full_checkpoint(self):
        """Model and optimizer saved together, the model's names wrapped by torch.compile in B only."""
        ck = self.loaded[2]
        other = dict(ck)
        other["model"] = {"_orig_mod." + k: v for k, v in ck["model"].items()}
        b = workfile("compiled_full.pt")
        torch.save(other, b)
        got = self.diff(self.epochs[2], b, rc=0)
        al = got["alignment"]
        self.assertEqual((al["rule"], al["prefix_a"], al["prefix_b"]), ("prefix", "model.", "model._orig_mod."))
        self.assertEqual(got["identical"], len(flatten(ck)))

    def test_prefix_given_by_hand(self):
        sd = self.loaded[1]["model"]
        a, b = workfile("hand_a.pt"), workfile("hand_b.pt")
        torch.save(sd, a)
        torch.save({"backbone." + k: v for k, v in sd.items()}, b)
        got = self.diff(a, b, "--prefix-b", "backbone.", rc=0)
        al = got["alignment"]
        self.assertEqual((al["rule"], al["prefix_a"], al["prefix_b"], al["matched"]),
                         ("manual", "", "backbone.", len(sd)))
        # a prefix that fits nothing: every name on its own side
        got = self.diff(a, b, "--prefix-a", "nothing.", "--prefix-b", "")
        self.assertEqual(got["alignment"]["rule"], "manual")
        self.assertEqual(sorted(got["removed"]), sorted(sd))
        self.assertEqual(sorted(got["added"]), sorted("backbone." + k for k in sd))
        self.assertEqual(got["identical"], 0)

    # ---- one tensor changed ---------------------------------------------------------------------------------------

    def test_one_tensor_changed(self):
        sd = {k: v.clone() for k, v in self.loaded[3]["model"].items()}
        a, b = workfile("one_a.pt"), workfile("one_b.pt")
        torch.save(sd, a)
        sd["head.0.weight"][3, 7] += 0.25
        torch.save(sd, b)
        got = self.diff(a, b)
        self.assertEqual([c["name"] for c in got["changed"]], ["head.0.weight"])
        c = got["changed"][0]
        self.assertEqual(c["kind"], "values")
        n = sd["head.0.weight"].numel()
        self.assertEqual(c["changed_fraction"], 1 / n)
        ref = ref_figures(self.loaded[3]["model"]["head.0.weight"], sd["head.0.weight"])
        for f in FIGURES:
            self.assert_close(c[f], ref[f], f)
        self.assertEqual(got["identical"], len(sd) - 1)
        self.assertEqual((got["added"], got["removed"], got["values_changed"]), ([], [], []))

    # ---- formats and dtypes ------------------------------------------------------------------------------------------

    def test_bin_and_safetensors_identical(self):
        sd = self.loaded[3]["model"]
        binp, st = workfile("pytorch_model.bin"), workfile("model.safetensors")
        torch.save(sd, binp)
        safetensors_from(sd, st)
        for a, b in ((binp, st), (st, binp)):
            got = self.diff(a, b, rc=0)
            self.assertEqual(got["alignment"]["rule"], "identity")
            self.assertEqual(got["identical"], len(sd))
            self.assertEqual((got["changed"], got["added"], got["removed"]), ([], [], []))
        # and a safetensors copy of the next epoch: same figures as PyTorch finds between the two
        st2 = workfile("model_next.safetensors")
        safetensors_from(self.loaded[2]["model"], st2)
        got = self.diff(st2, binp)
        self.check_against_torch(got, self.loaded[2]["model"], sd)

    def test_float32_against_float16(self):
        sd = self.loaded[3]["model"]
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
        a, b = workfile("f32.pt"), workfile("f16.pt")
        torch.save(sd, a)
        torch.save(half, b)
        got = self.diff(a, b)
        self.check_against_torch(got, sd, half)
        kinds = {c["name"]: c["kind"] for c in got["changed"]}
        self.assertEqual(kinds["conv.weight"], "dtype")
        self.assertNotIn("bn.num_batches_tracked", kinds)
        # float16 in safetensors against float32 in torch: the same figures
        st = workfile("f16.safetensors")
        safetensors_from(half, st)
        self.check_against_torch(self.diff(a, st), sd, half)
        # a tensor whose values survive the conversion exactly still changed dtype
        exact_a, exact_b = workfile("exact32.pt"), workfile("exact16.pt")
        torch.save({"x": torch.arange(8.0)}, exact_a)
        torch.save({"x": torch.arange(8.0).half()}, exact_b)
        got = self.diff(exact_a, exact_b)
        self.assertEqual(got["changed"][0]["kind"], "dtype")
        self.assertEqual(got["changed"][0]["max_abs"], 0.0)
        self.assertEqual((got["changed"][0]["from"], got["changed"][0]["to"]), ("float32", "float16"))

    def test_strided_storage(self):
        """A transposed view saved as such against the same values saved contiguous: no difference."""
        torch.manual_seed(5)
        w = torch.randn(37, 53)
        a, b = workfile("strided.pt"), workfile("contig.pt")
        torch.save({"w": w.t(), "col": w[:, 5], "v": w[3:9, 10:40]}, a)
        torch.save({"w": w.t().contiguous(), "col": w[:, 5].clone(), "v": w[3:9, 10:40].clone()}, b)
        got = self.diff(a, b, rc=0)
        self.assertEqual(got["identical"], 3)
        # and with a change, against PyTorch
        w2 = w.t().contiguous()
        w2[4, 2:30] -= 1.5
        torch.save({"w": w2, "col": w[:, 5] * 2, "v": w[3:9, 10:40].clone()}, b)
        obj_a = torch.load(a)
        obj_b = torch.load(b)
        self.check_against_torch(self.diff(a, b), obj_a, obj_b)

    # ---- structure ----------------------------------------------------------------------------------------------

    def test_added_removed_shape_device(self):
        sd = dict(self.loaded[3]["model"])
        a, b = workfile("struct_a.pt"), workfile("struct_b.pt")
        torch.save(sd, a)
        other = dict(sd)
        del other["head.2.bias"]
        other["head.3.weight"] = torch.zeros(2, 2)
        other["head.2.weight"] = torch.zeros(4, 16)  # was (3, 16)
        moved = other["conv.bias"]
        save_with_tags(other, b, lambda s: "cuda:0" if s.data_ptr() == moved.data_ptr() else "cpu")
        got = self.diff(a, b)
        self.assertEqual(got["removed"], ["head.2.bias"])
        self.assertEqual(got["added"], ["head.3.weight"])
        changed = {c["name"]: c for c in got["changed"]}
        self.assertEqual(set(changed), {"head.2.weight", "conv.bias"})
        self.assertEqual(changed["head.2.weight"]["kind"], "shape")
        self.assertEqual((changed["head.2.weight"]["from"], changed["head.2.weight"]["to"]), ("[3, 16]", "[4, 16]"))
        for f in FIGURES:
            self.assertIsNone(changed["head.2.weight"][f])
        c = changed["conv.bias"]
        self.assertEqual((c["kind"], c["from"], c["to"]), ("device", "cpu", "cuda:0"))
        self.assertEqual((c["max_abs"], c["rel_l2"], c["cosine"], c["changed_fraction"]), (0.0, 0.0, 1.0, 0.0))
        self.assertEqual(got["identical"], len(sd) - 3)
        # shape changes come first in the sorted list
        self.assertEqual(got["changed"][0]["name"], "head.2.weight")

    # ---- threshold ----------------------------------------------------------------------------------------------

    def test_threshold(self):
        a_obj, b_obj = self.loaded[2]["model"], self.loaded[3]["model"]
        ta, tb = dict(flatten(a_obj)), dict(flatten(b_obj))
        maxes = sorted(ref_figures(ta[n], tb[n])["max_abs"] for n in ta)
        threshold = maxes[len(maxes) // 2]  # about half the tensors fall at or below it
        got = self.diff(self.epochs[2], self.epochs[3], "--threshold", repr(threshold))
        self.assertEqual(got["threshold"], threshold)
        sub = {"model": a_obj}, {"model": b_obj}
        below = {n for n in ta if ref_figures(ta[n], tb[n])["max_abs"] <= threshold}
        self.assertTrue(below and len(below) < len(ta))
        changed = {c["name"]: c for c in got["changed"]}
        for n in ta:
            full = "model." + n
            if n in below:
                self.assertNotIn(full, changed, n)
            else:
                ref = ref_figures(ta[n], tb[n], threshold)
                for f in FIGURES:
                    self.assert_close(changed[full][f], ref[f], "%s %s" % (n, f))
        del sub
        # a threshold above every change: only the values still differ
        got = self.diff(self.epochs[2], self.epochs[3], "--threshold=1e9")
        self.assertEqual(got["changed"], [])
        self.assertTrue(got["values_changed"])

    # ---- exit statuses and errors ---------------------------------------------------------------------------------

    def test_errors(self):
        missing = workfile("no_such_file.pt")
        proc = self.run_ckpt("diff", self.epochs[0], missing)
        self.assert_error_output(proc, None, "missing file")
        self.assertIn("no_such_file.pt", proc.stderr.decode())
        junk = workfile("junk.pt")
        with open(junk, "wb") as f:
            f.write(b"PK\x03\x04 this is not a checkpoint")
        proc = self.run_ckpt("diff", junk, self.epochs[0])
        self.assert_error_output(proc, None, "malformed file")
        self.assertIn("junk.pt", proc.stderr.decode())
        for args, message in ((["diff", self.epochs[0]], "diff needs two files, A and B"),
                              (["diff", self.epochs[0], self.epochs[1], "--threshold", "-1"],
                               "--threshold needs a number >= 0, not '-1'"),
                              (["diff", self.epochs[0], self.epochs[1], "--threshold", "x"],
                               "--threshold needs a number >= 0, not 'x'"),
                              (["diff", self.epochs[0], self.epochs[1], "--prefix-a"], "--prefix-a needs a value"),
                              (["diff", self.epochs[0], self.epochs[1], "--bins", "3"],
                               "unknown option '--bins' for diff")):
            proc = self.run_ckpt(*args)
            self.assertEqual(proc.returncode, 2, args)
            self.assertEqual(proc.stderr.decode(), "ckpt: %s (ckpt --help shows the usage)\n" % message)

    def test_truncated_data_is_an_error(self):
        """A tensor whose bytes lie past the end of a (truncated) safetensors file: exit 2, the rest compared."""
        sd = self.loaded[3]["model"]
        st = workfile("trunc.safetensors")
        safetensors_from(sd, st)
        good = workfile("good.safetensors")
        safetensors_from(sd, good)
        size = os.path.getsize(st)
        with open(st, "r+b") as f:
            f.truncate(size - 8)
        proc = self.run_ckpt("diff", good, st, "--json")
        self.assert_error_output(proc, st, "truncated safetensors")
        got = common.parse_json_strict(self, proc.stdout)
        # the last tensor in the data buffer is the one cut short; the others are still compared
        last = max(test_safetensors.parse_safetensors(good)[2].items(), key=lambda kv: kv[1])[0]
        self.assertEqual([e["name"] for e in got["errors"]], [last])
        self.assertIn("runs past the end of the file", got["errors"][0]["error"])
        self.assertEqual(got["identical"], len(sd) - 1)
        self.assertEqual(got["changed"], [])
        self.assertTrue(proc.stderr.decode().rstrip().endswith("(values not compared)"))


if __name__ == "__main__":
    common.main()
