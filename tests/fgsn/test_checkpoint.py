"""The one checkpoint writer (fgsn.utils.checkpoint.save_checkpoint)."""
import pytest
import torch

from fgsn.utils.checkpoint import save_checkpoint


def _ckpt(iteration: int) -> dict:
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(float(iteration))
    return {"model": net.state_dict(), "optimizer": {}, "scheduler": None, "config": {"seed": 0},
            "iteration": iteration, "metrics": {"loss": 0.5}, "pose_stats": {"mean": [0.0, 0.0, 0.0]}}


class TestSaveCheckpoint:
    def test_round_trip_weights_only(self, tmp_path):
        path = save_checkpoint(_ckpt(3), tmp_path / "sub" / "last.pt")
        assert path == tmp_path / "sub" / "last.pt"
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["iteration"] == 3 and ck["scheduler"] is None and ck["pose_stats"] == {"mean": [0.0, 0.0, 0.0]}
        assert torch.equal(ck["model"]["weight"], torch.full((1, 2), 3.0))
        assert [p.name for p in path.parent.iterdir()] == ["last.pt"]

    def test_failed_write_keeps_previous_checkpoint(self, tmp_path):
        path = save_checkpoint(_ckpt(1), tmp_path / "last.pt")
        bad = {**_ckpt(2), "metrics": {"loss": lambda: 0}}  # not picklable: torch.save fails midway
        with pytest.raises(Exception):
            save_checkpoint(bad, path)
        ck = torch.load(path, map_location="cpu", weights_only=True)
        assert ck["iteration"] == 1 and torch.equal(ck["model"]["weight"], torch.full((1, 2), 1.0))
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left

    def test_interrupted_write_keeps_previous_checkpoint(self, tmp_path, monkeypatch):
        path = save_checkpoint(_ckpt(1), tmp_path / "last.pt")

        def partial_save(obj, f):  # writes some bytes, then the process is "killed"
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04partial")
            raise KeyboardInterrupt

        monkeypatch.setattr(torch, "save", partial_save)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(_ckpt(2), path)
        monkeypatch.undo()
        assert torch.load(path, map_location="cpu", weights_only=True)["iteration"] == 1
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]

    def test_missing_common_key(self, tmp_path):
        ck = _ckpt(0)
        del ck["optimizer"]
        with pytest.raises(ValueError, match="optimizer"):
            save_checkpoint(ck, tmp_path / "last.pt")
        assert not (tmp_path / "last.pt").exists()
