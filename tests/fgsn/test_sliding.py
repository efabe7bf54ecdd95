import pytest
import torch
import torch.nn.functional as F

from fgsn.sliding import sliding_window, window_starts, window_weights


class TestWindows:
    def test_paper_windows_flush(self):
        assert window_starts(1024, 713, 476) == [0, 311]  # last window flush with the border
        assert window_starts(1536, 713, 476) == [0, 476, 823]
        assert window_starts(713 + 476, 713, 476) == [0, 476]  # already flush: no duplicate

    def test_small_image_single_window(self):
        assert window_starts(300, 713, 476) == [0]

    def test_invalid(self):
        with pytest.raises(ValueError):
            window_starts(100, 50, 0)

    def test_weights(self):
        """The paper's map: 1 on the central 236 x 236 square, linear to 0 at the edges (at pixel centres)."""
        w = window_weights(713, 236)
        m = (713 - 236) / 2  # 238.5: the fall-off's length
        assert w.shape == (713, 713)
        row = w[356]
        assert torch.all(row[238:475] == 1) and row[237] < 1 and row[475] < 1  # pixel centres 238.5 .. 474.5
        assert row[0] == pytest.approx(0.5 / m) and row[0] > 0  # the edge line itself is at 0
        assert row[100] == pytest.approx(100.5 / m)
        assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.T)
        d = torch.diff(row[:239])  # linear fall-off
        assert torch.allclose(d, torch.full_like(d, 1 / m), atol=1e-6)


class TestSlidingWindow:
    @staticmethod
    def _stride8(x):  # a "network" returning the window subsampled at stride 8 (align_corners grid)
        return x[:, :, ::8, ::8]

    def test_constant_output_is_preserved(self):
        img = torch.full((3, 50, 70), 7.0)
        out = sliding_window(lambda x: torch.ones(x.shape[0], 2, 5, 5) * 3.0, img, patch=33, step=22)
        assert out.shape == (2, 50, 70)
        assert torch.allclose(out, torch.full_like(out, 3.0))

    def test_identity_reconstructs_image(self):
        img = torch.rand(3, 41, 67) * 255
        out = sliding_window(lambda x: x, img, patch=25, step=16, batch_size=3)
        assert torch.allclose(out, img, atol=1e-4)

    def test_linear_image_through_stride8(self):
        # bilinear upsampling of a stride-8 sampling reproduces a linear ramp exactly (patch - 1 divisible by 8)
        yy, xx = torch.meshgrid(torch.arange(60.0), torch.arange(90.0), indexing="ij")
        img = torch.stack([xx, yy, xx + yy])
        out = sliding_window(self._stride8, img, patch=41, step=27)
        assert torch.allclose(out, img, atol=1e-3)

    def test_small_image_is_padded(self):
        img = torch.rand(3, 20, 30) * 255
        calls = []
        out = sliding_window(lambda x: calls.append(x.shape) or x, img, patch=33, step=22)
        assert calls == [torch.Size([1, 3, 33, 33])]
        assert out.shape == (3, 20, 30) and torch.allclose(out, img)

    def test_points_mode_matches_dense(self):
        torch.manual_seed(0)
        img = torch.rand(3, 50, 70) * 255
        fn = lambda x: F.avg_pool2d(x, 8, 8, ceil_mode=True)  # noqa: E731
        dense = sliding_window(fn, img, patch=33, step=22)
        pts = torch.tensor([[0, 0], [69, 49], [35, 20], [12, 44]], dtype=torch.float32)
        sparse = sliding_window(fn, img, patch=33, step=22, points=pts)
        assert torch.allclose(sparse, dense[:, pts[:, 1].long(), pts[:, 0].long()].T, atol=1e-4)

    def test_shape_check(self):
        with pytest.raises(ValueError):
            sliding_window(lambda x: x, torch.zeros(1, 10, 10), 8, 4)
