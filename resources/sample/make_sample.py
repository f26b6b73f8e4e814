"""Writes resources/sample/training_checkpoint.pt: a small real training checkpoint (model, Adam state, epoch,
loss) as a training loop saves it. Run with Debian's /usr/bin/python3 (python3-torch); the file is committed."""
import os
import torch

torch.manual_seed(2026)


class SmallConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 32), torch.nn.ReLU(),
                                              torch.nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


model = SmallConvNet()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
for epoch in range(3):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_checkpoint.pt")
torch.save({"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "loss": float(loss), "config": {"lr": 1e-3, "batch_size": 64, "arch": "SmallConvNet"}}, out)
print(out, os.path.getsize(out))
