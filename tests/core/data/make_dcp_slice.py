"""Writes dcp_slice{0,1,2}.pt, one-element tensors of 0, 1 and 2 dimensions that tst_dcphostile's hand-written
.metadata files use as every chunk of their tensors (a DCP slice is a complete torch.save archive of one
tensor). Run with Debian's /usr/bin/python3 (python3-torch); the outputs are committed so that the unit test
needs no Python."""
import os
import torch

here = os.path.dirname(os.path.abspath(__file__))
for dims, t in enumerate([torch.tensor(2.5), torch.tensor([2.5]), torch.tensor([[2.5]])]):
    torch.save(t.to(torch.float32), os.path.join(here, "dcp_slice%d.pt" % dims))
