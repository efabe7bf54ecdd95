"""Forward shapes, losses and ImageNet weight loading of every APR model, on tiny inputs."""
import math

import pytest
import torch

from fgsn.models.resnet import ResNet
from fgsn.weights import load_resnet_weights
from localization.apr.models import MODELS, get_model
from localization.apr.models.colorization import ColorizationAPR, rgb_to_lab
from localization.apr.pose import qexp, qnormalize, relative_pose

TINY = {"backbone": {"depth": 10, "base_width": 8}}
EXTRA = {"posenet": {"feat_dim": 32, "aux_dim": 16}, "atloc": {"feat_dim": 32}, "atloc_plus": {"feat_dim": 32},
         "vlocnet": {"fc_dim": 32, "pose_channels": 4}, "colorization": {"color_width": 4, "fuse_channels": 16,
                                                                         "fc_dim": 32}}


def _batch(B=2, T=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(B, T, 3, size, size, generator=g), "position": torch.randn(B, T, 3, generator=g),
            "qvec": qnormalize(torch.randn(B, T, 4, generator=g))}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_loss_backward(name):
    torch.manual_seed(0)
    model = get_model(name)({**TINY, **EXTRA[name]})
    data = _batch()
    pred = model(data)
    Tp = 2 if name == "vlocnet" else 3  # VLocNet predicts the frames that have a previous frame
    assert pred["position"].shape == (2, Tp, 3) and pred["qvec"].shape == (2, Tp, 4)
    assert torch.allclose(pred["qvec"].norm(dim=-1), torch.ones(2, Tp), atol=1e-5)
    assert (pred["qvec"][..., 0] >= 0).all()
    losses, metrics = model.loss(pred, data)
    assert losses["total"].ndim == 0 and torch.isfinite(losses["total"])
    assert {"err_t_m", "err_R_deg"} <= set(metrics)
    losses["total"].backward()
    assert model.backbone.conv1.weight.grad is not None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_single_frame(name):
    model = get_model(name)({**TINY, **EXTRA[name]}).eval()
    model.set_pose_stats([10.0, 0.0, 0.0], 2.0)
    data = {"image": torch.rand(3, 1, 3, 32, 48)}
    if name == "vlocnet":
        data.update(prev_position=torch.zeros(3, 1, 3), prev_qvec=torch.tensor([1.0, 0, 0, 0]).expand(3, 1, 4))
    p, q = model.predict(data)
    assert p.shape == (3, 3) and q.shape == (3, 4)
    assert torch.allclose(p, model(data)["position"][:, -1] * 2.0 + torch.tensor([10.0, 0, 0]))


def test_bad_input_shape():
    model = get_model("atloc")({**TINY, **EXTRA["atloc"]})
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model({"image": torch.rand(2, 3, 32, 32)})
    with pytest.raises(ValueError, match="unknown APR model"):
        get_model("posenet2")


def test_atloc_plus_needs_window():
    model = get_model("atloc_plus")({**TINY, **EXTRA["atloc_plus"]})
    with pytest.raises(ValueError, match="windows of 2 frames"):
        model(_batch(T=1))


def test_vlocnet_odometry_with_prev_image():
    model = get_model("vlocnet")({**TINY, **EXTRA["vlocnet"]}).eval()
    data = {"image": torch.rand(1, 1, 3, 32, 32), "prev_image": torch.rand(1, 1, 3, 32, 32),
            "prev_position": torch.zeros(1, 1, 3), "prev_qvec": torch.tensor([[[1.0, 0, 0, 0]]])}
    pred = model(data)
    assert pred["odo_dp"].shape == (1, 1, 3) and pred["odo_dq"].shape == (1, 1, 4)


def test_rgb_to_lab_known_values():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 3, 1)
    lab = rgb_to_lab(rgb)[0, :, :, 0].T
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.05)
    assert torch.allclose(lab[1], torch.tensor([53.24, 80.09, 67.20]), atol=0.1)
    assert torch.allclose(lab[2], torch.zeros(3), atol=1e-4)


def test_colorization_attention():
    m = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2); GMP = (2, 3)
    # M_SaE = (2, 4 | 9, 0); channel mean = (5.5, 2); M_att = M_fuse * mask
    expected = torch.tensor([[[[5.5, 4.0]], [[16.5, 0.0]]]])
    assert torch.allclose(ColorizationAPR.attention(m), expected)


class TestColorizationStructure:
    """The paper's structure (Tian et al.; docs/ALGORITHMS.md section 11): Res5 at 1/16, the final fusion of M_fuse
    and M_att, log q output."""

    @staticmethod
    def _model():
        torch.manual_seed(0)
        return ColorizationAPR({**TINY, **EXTRA["colorization"]}).eval()

    def test_res5_at_one_sixteenth(self):
        model = self._model()
        shapes = {}
        model.backbone.layer4.register_forward_hook(lambda m, i, o: shapes.update(res5=o.shape))
        model.colorizer.register_forward_hook(lambda m, i, o: shapes.update(color=o[1].shape))
        model({"image": torch.rand(1, 1, 3, 64, 96)})
        # layer4 keeps stride 1 and dilates (output stride 16; 1/32 would be 2x3), on the colourizer's grid
        assert shapes["res5"][-2:] == (4, 6) and shapes["color"][-2:] == (4, 6)
        assert model.backbone.layer4[0].conv1.dilation == (2, 2)

    def test_final_fusion_applied(self):
        model = self._model()
        data = {"image": torch.rand(2, 1, 3, 32, 32)}
        seen = {}

        def zero(module, inputs, output):  # record the input, replace M_final by zeros
            seen["in"] = inputs[0].shape
            return torch.zeros_like(output)

        handle = model.fuse_final.register_forward_hook(zero)
        pred = model(data)
        handle.remove()
        C = EXTRA["colorization"]["fuse_channels"]
        assert seen["in"] == (2, 2 * C, 2, 2)  # [M_fuse, M_att]
        # with M_final = 0 the head sees GAP = 0 for both images: position = fc_p(relu(fc.bias))
        expected = model.fc_p(torch.relu(model.fc.bias))
        assert torch.allclose(pred["position"][:, 0], expected.expand(2, 3), atol=1e-6)
        assert not torch.allclose(model(data)["position"][0], model(data)["position"][1])  # without the hook

    def test_log_quaternion_output(self):
        model = self._model()
        pred = model({"image": torch.rand(2, 1, 3, 32, 32)})
        assert pred["logq"].shape == (2, 1, 3) and model.fc_q.out_features == 3
        assert torch.allclose(pred["qvec"], qnormalize(qexp(pred["logq"])))


class TestImageNetWeights:
    def test_load_and_report(self, tmp_path):
        src = ResNet(18)
        state = {k: v.clone() for k, v in src.state_dict().items()}
        state["fc.weight"] = torch.zeros(1000, 512)  # the classifier is dropped silently
        state["extra.weight"] = torch.zeros(1)  # reported as unexpected
        del state["layer4.1.bn2.weight"]  # reported as missing
        path = tmp_path / "resnet18.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
        model = get_model("atloc")({"backbone": {"depth": 18, "pretrained": None}, "feat_dim": 32})
        report = load_resnet_weights(model, path, prefix="backbone.")
        assert report.unexpected == ["extra.weight"]  # file key names
        assert report.missing == ["backbone.layer4.1.bn2.weight"]
        assert report.mismatched == []
        assert "fc.weight" in model.state_dict() and "fc.weight" in report.allowed_missing  # AtLoc's own fc
        assert torch.equal(model.backbone.layer2[0].conv1.weight, src.layer2[0].conv1.weight)

    def test_shape_mismatch_and_missing_file(self, tmp_path):
        path = tmp_path / "r.pth"
        torch.save(ResNet(10, base_width=64).state_dict(), path)
        model = get_model("posenet")({**TINY, **EXTRA["posenet"]})
        report = load_resnet_weights(model, path, prefix="backbone.")
        assert "backbone.conv1.weight: file (64, 3, 7, 7) vs model (8, 3, 7, 7)" in report.mismatched
        with pytest.raises(FileNotFoundError, match="nope.pth"):
            load_resnet_weights(model, tmp_path / "nope.pth")

    def test_pretrained_from_config(self, tmp_path):
        path = tmp_path / "r.pth"
        src = ResNet(10, base_width=8, activation="elu")
        torch.save(src.state_dict(), path)
        model = get_model("vlocnet")({"backbone": {"depth": 10, "base_width": 8, "pretrained": str(path)},
                                      **EXTRA["vlocnet"]})
        assert torch.equal(model.backbone.conv1.weight, src.conv1.weight)
        # issue 14: the odometry streams start from ImageNet too: I_{t-1}'s own Res1-Res4, I_t's own Res4, and the
        # odometry Res5, whose first unit sees [I_{t-1}, I_t] (the kernel over both halves, halved)
        assert torch.equal(model.odo_prev.conv1.weight, src.conv1.weight)
        assert model.odo_prev.conv1.weight is not model.backbone.conv1.weight
        assert torch.equal(model.odo_prev.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
        assert torch.equal(model.odo_res4[0].conv1.weight, src.layer3[0].conv1.weight)
        w = src.layer4[0].conv1.weight
        assert torch.equal(model.odo_res5[0].conv1.weight, 0.5 * torch.cat([w, w], 1))
        assert torch.equal(model.odo_res5[0].conv2.weight, src.layer4[0].conv2.weight)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_vlocnet_scheduled_sampling(prob):
    """own_prev_prob = 1: frame 2 of a training window receives the detached prediction of frame 1 as previous
    pose, frame 1 the ground truth of frame 0 (noise off here); own_prev_prob = 0: every frame gets the ground
    truth of its predecessor."""
    torch.manual_seed(0)
    model = get_model("vlocnet")({**TINY, **EXTRA["vlocnet"], "dropout": 0.0, "prev_noise_pos": 0.0,
                                  "prev_noise_rot_deg": 0.0, "own_prev_prob": prob, "odometry": False}).train()
    data = _batch(B=2, T=3, size=32)
    seen = []
    orig = model._global

    def spy(f3, prev_p, prev_q):
        seen.append((prev_p, prev_q))
        return orig(f3, prev_p, prev_q)

    model._global = spy
    pred = model(data)
    assert pred["position"].shape == (2, 2, 3) and pred["qvec"].shape == (2, 2, 4)
    if prob == 0.0:  # one batched call on frames 1, 2 with the ground truth of frames 0, 1
        assert len(seen) == 1
        assert torch.allclose(seen[0][0], data["position"][:, :2].reshape(4, 3))
        return
    assert len(seen) == 2
    assert torch.allclose(seen[0][0], data["position"][:, 0]) and torch.allclose(seen[0][1], data["qvec"][:, 0])
    assert torch.equal(seen[1][0], pred["position"][:, 0].detach()) and not seen[1][0].requires_grad
    assert torch.equal(seen[1][1], pred["qvec"][:, 0].detach()) and not seen[1][1].requires_grad
    assert not torch.allclose(seen[1][0], data["position"][:, 1])
    losses, _ = model.loss(pred, data)
    losses["total"].backward()
    assert model.backbone.conv1.weight.grad is not None


def test_vlocnet_prev_mean_reset():
    """prev_mean_prob = 1: every previous pose in training is the mean training pose (normalised origin, the mean
    rotation), the pose sequential inference starts from; 0.5: a seeded mix of resets and ground truth."""
    torch.manual_seed(0)
    model = get_model("vlocnet")({**TINY, **EXTRA["vlocnet"], "prev_noise_pos": 0.0, "prev_noise_rot_deg": 0.0,
                                  "prev_mean_prob": 1.0, "odometry": False}).train()
    q0 = qnormalize(torch.tensor([0.9, 0.1, -0.3, 0.2]))
    model.set_pose_stats([1.0, 2.0, 3.0], 4.0, q0)
    data = _batch(B=4, T=3, size=32)
    p, q = model._perturb(data["position"][:, :-1], data["qvec"][:, :-1])
    assert torch.equal(p, torch.zeros(4, 2, 3)) and torch.allclose(q, q0.expand(4, 2, 4))
    model.conf.prev_mean_prob = 0.5
    torch.manual_seed(1)
    p, q = model._perturb(data["position"][:, :-1], data["qvec"][:, :-1])
    reset = (p == 0).all(-1)
    assert reset.int().tolist() == [[0, 0], [1, 1], [0, 1], [0, 0]]  # seeded draw (torch.rand per frame)
    assert torch.allclose(p[~reset], data["position"][:, :-1][~reset])
    assert torch.allclose(q[reset], q0.expand(int(reset.sum()), 4))


def _vlocnet(**extra):
    torch.manual_seed(0)
    return get_model("vlocnet")({**TINY, **EXTRA["vlocnet"], "dropout": 0.0, **extra})


class TestVLocNetStructure:
    """Valada et al. (issue 14): which weights each stream has, where the previous pose is fused."""

    def test_stream_weights(self):
        """I_{t-1}'s odometry stream has its own weights (no Parameter shared with the global stream); I_t's odometry
        stream has its own Res4 on the global stream's Res3 output, computed by the global stream's own modules (no
        other Res1-Res3 exists in the model). The old code ran I_{t-1} through the shared trunk too."""
        model = _vlocnet().train()
        glob = {id(p) for p in model.backbone.parameters()}
        assert not glob & {id(p) for p in model.odo_prev.parameters()}
        assert not glob & {id(p) for p in model.odo_res4.parameters()}
        assert not hasattr(model.odo_prev, "layer4")  # Res1-Res4 only
        assert {n for n, _ in model.named_children()} == {"backbone", "pose_fc", "fuse", "global_head", "odo_prev",
                                                         "odo_res4", "odo_res5", "odo_head"}
        seen = {}
        model.backbone.layer2.register_forward_hook(lambda m, inp, out: seen.update(res3=out))  # hooks return None
        model.odo_res4.register_forward_hook(lambda m, inp, out: seen.update(odo_res4_in=inp[0]))
        model(_batch(B=2, T=3, size=32))
        assert torch.equal(seen["odo_res4_in"], seen["res3"])  # I_t's Res4 runs on the shared Res3 maps

    def test_streams_depend_on_their_stages(self):
        """Perturbing a stage changes exactly the outputs of the streams that use it: the shared Res1-Res3 both
        streams, the global Res4 only the global pose, I_t's own Res4 and I_{t-1}'s stream only the odometry."""
        model = _vlocnet().eval()
        data = _batch(B=1, T=2, size=32)
        base = model(data)

        def changed(module):
            saved = {k: v.clone() for k, v in module.state_dict().items()}
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(0.5 * torch.randn_like(p))
            out = model(data)
            module.load_state_dict(saved)
            return (not torch.allclose(out["position"], base["position"]),
                    not torch.allclose(out["odo_dp"], base["odo_dp"]))

        assert changed(model.backbone.layer2) == (True, True)  # shared Res3
        assert changed(model.backbone.layer3) == (True, False)  # global Res4
        assert changed(model.odo_res4) == (False, True)  # I_t's own Res4
        assert changed(model.odo_prev.layer1) == (False, True)  # I_{t-1}'s own Res2
        assert changed(model.odo_res5) == (False, True)

    @pytest.mark.parametrize("size,grid", [(224, 7), (112, 4)])
    def test_previous_pose_fused_on_res5_grid(self, size, grid):
        """The previous-pose embedding is concatenated to a stride-32 map (7x7 at 224, as the paper's Res5; 4x4
        at the CPU preset's 112), where the old code fused it at Res4 (14x14 / 7x7)."""
        model = _vlocnet(odometry=False).eval()
        seen = []
        model.fuse.register_forward_hook(lambda m, inp, out: seen.append((tuple(inp[0].shape), tuple(out.shape))))
        model({"image": torch.rand(1, 1, 3, size, size), "prev_position": torch.zeros(1, 1, 3),
               "prev_qvec": torch.tensor([[[1.0, 0, 0, 0]]])})
        C5 = model.backbone.channels[4]
        assert seen == [((1, C5 + 4, grid, grid), (1, C5, grid, grid))]

    def test_odometry_concatenates_res4(self):
        """The odometry Res5 gets the two streams' Res4 maps (1/16 grid) concatenated: 2 x C4 channels."""
        model = _vlocnet().eval()
        seen = []
        model.odo_res5.register_forward_hook(lambda m, inp, out: seen.append((tuple(inp[0].shape), tuple(out.shape))))
        model(_batch(B=1, T=2, size=64))
        C4, C5 = model.backbone.channels[3:5]
        assert seen == [((1, 2 * C4, 4, 4), (1, C5, 2, 2))]

    def test_old_checkpoint_refused(self):
        model = _vlocnet()
        state = model.state_dict()
        state["odo_reduce.0.weight"] = torch.zeros(1)
        with pytest.raises(ValueError, match="old VLocNet layout"):
            model.load_state_dict(state)
        old = _vlocnet(odometry=False).state_dict()
        old["fuse.0.weight"] = torch.zeros(model.backbone.channels[3], model.backbone.channels[3] + 4, 1, 1)
        with pytest.raises(ValueError, match="retrain"):
            _vlocnet(odometry=False).load_state_dict(old)


def _qz(deg):
    a = torch.deg2rad(torch.tensor(deg / 2.0))
    return torch.stack([torch.cos(a), torch.zeros(()), torch.zeros(()), torch.sin(a)])


class TestVLocNetLoss:
    """Known answers for a 3-frame window: frames 0, 1, 2 at x = (0,0,0), (1,0,0), (1,2,0) with world-to-camera
    rotations 90, 180, 180 deg about z."""

    I = torch.tensor([1.0, 0, 0, 0])
    data = {"position": torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [1.0, 2, 0]]]),
            "qvec": torch.stack([_qz(90.0), _qz(180.0), _qz(180.0)])[None]}
    # global predictions of frames 1, 2; odometry predictions of the pairs (0, 1), (1, 2)
    pred = {"position": torch.tensor([[[1.0, 0, 0], [1.0, 2, 2]]]), "qvec": I.expand(1, 2, 4),
            "odo_dp": torch.tensor([[[1.0, 0, 2], [0.0, 2, 0]]]), "odo_dq": I.expand(1, 2, 4)}
    s22 = math.sin(math.radians(22.5))

    def _losses(self, iteration, **extra):
        model = _vlocnet(**extra)
        model.iteration = iteration
        return model.loss(self.pred, self.data)[0]

    def test_terms(self):
        losses = self._losses(0)
        # absolute: position errors 0, 2 -> 1; ||1 - q_z(180)|| = sqrt 2 for both frames
        assert losses["global_x"].item() == pytest.approx(1.0) and losses["global_q"].item() == pytest.approx(
            math.sqrt(2))
        # pair (1, 2): x_2 - x_1 = (0, 2, 0) vs (0, 2, 2) -> 2; q_1^-1 q_2 = 1 = q^_1^-1 q^_2 -> 0
        # (the old camera-frame relative motion gives R_1 (0, 2, 0) = (0, -2, 0): error ||(0, 4, 2)||)
        assert losses["geo_x"].item() == pytest.approx(2.0) and losses["geo_q"].item() == pytest.approx(0.0, abs=1e-6)
        glob = (1.0 + 2.0) + (math.sqrt(2) + 0.0) * math.exp(3.0) - 3.0  # s_x = 0, s_q = -3
        assert losses["global"].item() == pytest.approx(glob, rel=1e-6)
        # odometry, world-frame target: pair (0, 1): (1, 0, 0) vs (1, 0, 2) -> 2, q_0^-1 q_1 = q_z(90) vs 1 ->
        # 2 sin(22.5 deg); pair (1, 2): exact -> 0
        assert losses["odo_x"].item() == pytest.approx(1.0)
        assert losses["odo_q"].item() == pytest.approx(self.s22, rel=1e-6)
        odo = 1.0 + self.s22 * math.exp(3.0) - 3.0
        assert losses["odometry"].item() == pytest.approx(odo, rel=1e-6)

    def test_alternating_and_joint_totals(self):
        glob, odo = self._losses(0)["global"].item(), self._losses(0)["odometry"].item()
        assert self._losses(0)["total"].item() == pytest.approx(glob)  # step 1: global
        assert self._losses(1)["total"].item() == pytest.approx(odo)  # step 2: odometry
        assert self._losses(6)["total"].item() == pytest.approx(glob)  # step 7
        for it in (0, 1):
            assert self._losses(it, optimisation="joint")["total"].item() == pytest.approx(glob + odo)
        assert self._losses(1, odometry=False)["total"].item() == pytest.approx(glob)  # no stream: always global

    def test_camera_target_option(self):
        """odometry_target: camera (ours) regresses R_{t-1} (x_t - x_{t-1}), q_t q_{t-1}^-1: pair (0, 1):
        R_z(90) (1, 0, 0) = (0, 1, 0) vs (1, 0, 2) -> sqrt 6; pair (1, 2): R_z(180) (0, 2, 0) = (0, -2, 0) vs
        (0, 2, 0) -> 4."""
        dp, _ = relative_pose(self.data["position"][:, :-1], self.data["qvec"][:, :-1], self.data["position"][:, 1:],
                              self.data["qvec"][:, 1:])
        assert torch.allclose(dp, torch.tensor([[[0.0, 1, 0], [0.0, -2, 0]]]), atol=1e-6)
        losses = self._losses(1, odometry_target="camera")
        assert losses["odo_x"].item() == pytest.approx((math.sqrt(6) + 4) / 2, rel=1e-6)

    def test_bad_options(self):
        with pytest.raises(ValueError, match="optimisation"):
            _vlocnet(optimisation="sometimes")
        with pytest.raises(ValueError, match="odometry_target"):
            _vlocnet(odometry_target="body")


class TestVLocNetAlternating:
    """Gradients of a real forward pass: odd steps n = iteration + 1 reach the global stream (with its s_x, s_q) and
    the shared Res1-Res3 only, even steps the odometry streams (with their s_x, s_q) and the shared Res1-Res3 only;
    joint reaches both."""

    @staticmethod
    def _groups(model):
        b = model.backbone
        ids = lambda *mods: [p for m in mods for p in (m.parameters() if isinstance(m, torch.nn.Module) else [m])]
        return {"shared": ids(b.conv1, b.bn1, b.layer1, b.layer2),
                "global": ids(b.layer3, b.layer4, model.fuse, model.pose_fc, model.global_head, model.s_x, model.s_q),
                "odometry": ids(model.odo_prev, model.odo_res4, model.odo_res5, model.odo_head, model.s_x_odo,
                                model.s_q_odo)}

    def _grads(self, iteration, **extra):
        model = _vlocnet(**extra).train()
        model.iteration = iteration
        data = _batch(B=2, T=3, size=32)
        losses, _ = model.loss(model(data), data)
        losses["total"].backward()
        groups = self._groups(model)
        assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
        return {k: [p.grad is not None for p in g] for k, g in groups.items()}

    @pytest.mark.parametrize("iteration,task", [(0, "global"), (1, "odometry"), (2, "global"), (3, "odometry")])
    def test_alternating(self, iteration, task):
        got = self._grads(iteration)
        other = "odometry" if task == "global" else "global"
        assert all(got["shared"]) and all(got[task]) and not any(got[other])

    def test_joint(self):
        got = self._grads(1, optimisation="joint")
        assert all(got["shared"]) and all(got["global"]) and all(got["odometry"])
