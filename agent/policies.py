"""Policy networks shared by GC-BC, DAgger and SAC+HER, built from a :class:`hardware.spec.Spec`.

A :class:`Policy` takes the spec's observation dict with a history axis — every input is
``[batch, H, *feature.shape]`` (float32 vectors, uint8 HWC images) — and returns an action
``[batch, action_dim]`` in the action feature's units, clipped to its range. Everything a deployed
policy needs lives inside the module as buffers, so :mod:`agent.export` puts it in the ONNX graph:

- observation normalization (per-dimension mean/std of every vector feature and of the goal delta
  ``desired_goal - achieved_goal``), computed from the training data by :func:`agent.data.compute_stats`
  and installed with :meth:`Policy.set_stats`; images are scaled by 1/255;
- history handling: ``arch="mlp"`` flattens the window (frame stacking: image frames are stacked on
  the channel axis), ``arch="gru"`` encodes every step and runs a GRU over the window;
- the head's decoding: ``mse`` (deterministic), ``gmm`` (mean of the most likely of K Gaussian modes),
  ``discrete`` (per-dimension categorical over bins; bin centre of the argmax), ``tanh_gaussian``
  (SAC's squashed Gaussian; tanh of the mean);
- action scaling from the normalized [-1, 1] space to ``[low, high]`` and clipping.

Conditioning: the goal enters as the ``desired_goal`` feature plus the goal delta; a multi-task id
enters as the spec's one-hot ``task`` feature. Both are just observation features of the spec.

The API used by the trainers::

    policy = Policy(spec, PolicyConfig(head="gmm", history=2))
    policy.set_stats(stats)                       # from agent.data.compute_stats
    loss = policy.loss(obs, action).mean()        # obs: dict key -> [B, H, ...] tensors
    action = policy(obs)                          # [B, 2], decoded, scaled and clipped

SAC (agent/her.py) uses ``head="tanh_gaussian"`` and :meth:`Policy.sample` for reparameterized
actions with log-probabilities; its actor then saves and exports like any other policy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agent.configs import PolicyConfig
from hardware.errors import Sim2PiError
from hardware.spec import Spec

GOAL_DELTA = "goal_delta"  # derived input desired_goal - achieved_goal
EGO_PREFIX = "ego_"  # derived inputs: goal points in the robot frame (ego_desired_goal, ...)
POSE_NAMES = ("x", "y", "cos_theta", "sin_theta")  # what makes the robot frame computable


# ----------------------------------------------------------------------------------------------
# Encoders


def mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, last_act: bool = True) -> nn.Sequential:
    """Linear layers with activations between them (and after the last one if ``last_act``)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """A small CNN for 64x64 frames: three strided convs, then a linear embedding."""

    def __init__(
        self, in_channels: int, height: int, width: int, channels: tuple[int, ...], embed: int
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        with torch.no_grad():
            n = self.conv(torch.zeros(1, in_channels, height, width)).numel()
        self.out = nn.Sequential(nn.Flatten(), nn.Linear(n, embed), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        """x: float [N, C, H, W] in [0, 1] → [N, embed]."""
        return self.out(self.conv(x))


# ----------------------------------------------------------------------------------------------
# Heads. Each works in the normalized action space [-1, 1]^D.


class Head(nn.Module):
    """Maps trunk features to a distribution over normalized actions."""

    def nll(self, feat: Tensor, u: Tensor) -> Tensor:
        """Per-sample loss of normalized target actions ``u`` [B, D] → [B]."""
        raise NotImplementedError

    def decode(self, feat: Tensor) -> Tensor:
        """The deterministic action used at deployment, normalized [B, D]."""
        raise NotImplementedError


class DeterministicHead(Head):
    """Regression with mean squared error (predicts the conditional mean)."""

    def __init__(self, in_dim: int, act_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, act_dim)

    def nll(self, feat: Tensor, u: Tensor) -> Tensor:
        return ((self.linear(feat) - u) ** 2).sum(-1)

    def decode(self, feat: Tensor) -> Tensor:
        return self.linear(feat)


class GMMHead(Head):
    """A mixture of K diagonal Gaussians trained by negative log-likelihood."""

    def __init__(
        self, in_dim: int, act_dim: int, modes: int, min_log_std: float, max_log_std: float
    ):
        super().__init__()
        self.k, self.d = modes, act_dim
        self.min_log_std, self.max_log_std = min_log_std, max_log_std
        self.linear = nn.Linear(in_dim, modes * (2 * act_dim + 1))

    def params(self, feat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits [B, K], means [B, K, D], log_stds [B, K, D])."""
        out = self.linear(feat)
        logits = out[:, : self.k]
        rest = out[:, self.k :].reshape(-1, self.k, 2 * self.d)
        means = rest[..., : self.d]
        log_std = rest[..., self.d :].clamp(self.min_log_std, self.max_log_std)
        return logits, means, log_std

    def nll(self, feat: Tensor, u: Tensor) -> Tensor:
        logits, means, log_std = self.params(feat)
        z = (u.unsqueeze(1) - means) * torch.exp(-log_std)
        comp = -0.5 * (z**2).sum(-1) - log_std.sum(-1) - 0.5 * self.d * math.log(2 * math.pi)
        return -torch.logsumexp(F.log_softmax(logits, -1) + comp, dim=-1)

    def decode(self, feat: Tensor) -> Tensor:
        logits, means, _ = self.params(feat)
        best = torch.argmax(logits, dim=-1)  # the most likely mode
        idx = best.reshape(-1, 1, 1).expand(-1, 1, self.d)
        return torch.gather(means, 1, idx).squeeze(1)


class DiscreteHead(Head):
    """Each action dimension categorical over ``bins`` uniform bins of [-1, 1], predicted
    autoregressively: dimension d also sees the bins chosen for dimensions < d (teacher-forced in
    training, argmax at deployment). Independent per-dimension argmaxes could combine the left
    wheel of one mode with the right wheel of another; conditioning keeps a consistent mode
    (as in autoregressive action tokenizers such as RT-1's)."""

    def __init__(self, in_dim: int, act_dim: int, bins: int, embed: int = 16, hidden: int = 64):
        super().__init__()
        self.d, self.bins = act_dim, bins
        self.centers: Tensor
        self.first = nn.Linear(in_dim, bins)
        self.embeds = nn.ModuleList([nn.Embedding(bins, embed) for _ in range(act_dim - 1)])
        self.rest = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(in_dim + (i + 1) * embed, hidden), nn.ReLU(), nn.Linear(hidden, bins)
                )
                for i in range(act_dim - 1)
            ]
        )
        self.register_buffer("centers", torch.linspace(-1.0, 1.0, bins))

    def to_bins(self, u: Tensor) -> Tensor:
        """Normalized actions [B, D] → bin indices [B, D]."""
        return torch.round((u.clamp(-1, 1) + 1) * 0.5 * (self.bins - 1)).long()

    def logits(self, feat: Tensor, prev: Tensor) -> list[Tensor]:
        """Per-dimension logits [B, bins], dimension d conditioned on ``prev[:, :d]`` bins."""
        out = [self.first(feat)]
        ctx = [feat]
        for i in range(self.d - 1):
            ctx.append(self.embeds[i](prev[:, i]))
            out.append(self.rest[i](torch.cat(ctx, dim=-1)))
        return out

    def nll(self, feat: Tensor, u: Tensor) -> Tensor:
        target = self.to_bins(u)
        logits = self.logits(feat, target)
        return sum(
            F.cross_entropy(lg, target[:, i], reduction="none") for i, lg in enumerate(logits)
        )  # type: ignore[return-value]

    def sample(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """Bins drawn autoregressively: (bin centres [B, D], log-prob of the draw [B])."""
        lg = self.first(feat)
        chosen = [torch.multinomial(F.softmax(lg, -1), 1).squeeze(-1)]
        logp = F.log_softmax(lg, -1).gather(1, chosen[-1][:, None]).squeeze(1)
        ctx = [feat]
        for i in range(self.d - 1):
            ctx.append(self.embeds[i](chosen[-1]))
            lg = self.rest[i](torch.cat(ctx, dim=-1))
            chosen.append(torch.multinomial(F.softmax(lg, -1), 1).squeeze(-1))
            logp = logp + F.log_softmax(lg, -1).gather(1, chosen[-1][:, None]).squeeze(1)
        return self.centers[torch.stack(chosen, dim=-1)], logp

    def decode(self, feat: Tensor) -> Tensor:
        chosen = [torch.argmax(self.first(feat), dim=-1)]
        ctx = [feat]
        for i in range(self.d - 1):
            ctx.append(self.embeds[i](chosen[-1]))
            chosen.append(torch.argmax(self.rest[i](torch.cat(ctx, dim=-1)), dim=-1))
        return self.centers[torch.stack(chosen, dim=-1)]


class TanhGaussianHead(Head):
    """SAC's squashed Gaussian: a = tanh(mean + std * eps)."""

    def __init__(self, in_dim: int, act_dim: int, min_log_std: float, max_log_std: float):
        super().__init__()
        self.d = act_dim
        self.min_log_std, self.max_log_std = min_log_std, max_log_std
        self.linear = nn.Linear(in_dim, 2 * act_dim)

    def params(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std), each [B, D], pre-squash."""
        out = self.linear(feat)
        mean, log_std = out[:, : self.d], out[:, self.d :]
        # Soft clamp of log std into [min, max] (as in common SAC implementations).
        log_std = torch.tanh(log_std)
        log_std = self.min_log_std + 0.5 * (self.max_log_std - self.min_log_std) * (log_std + 1)
        return mean, log_std

    def sample(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterized (action [B, D] in (-1, 1), log-prob [B])."""
        mean, log_std = self.params(feat)
        std = log_std.exp()
        x = mean + std * torch.randn_like(mean)
        a = torch.tanh(x)
        logp = (-0.5 * ((x - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh(x)/dx| = 2 (log 2 - x - softplus(-2x)), numerically stable.
        logp = logp - (2 * (math.log(2) - x - F.softplus(-2 * x))).sum(-1)
        return a, logp

    def nll(self, feat: Tensor, u: Tensor) -> Tensor:
        mean, log_std = self.params(feat)
        x = torch.atanh(u.clamp(-0.999, 0.999))
        logp = (-0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std).sum(-1)
        return -logp

    def decode(self, feat: Tensor) -> Tensor:
        return torch.tanh(self.params(feat)[0])


# ----------------------------------------------------------------------------------------------
# The policy


class Policy(nn.Module):
    """Observation dict with history → action. See the module docstring."""

    action_low: Tensor  # buffers (declared for type checkers)
    action_high: Tensor

    def __init__(self, spec: Spec, config: PolicyConfig | None = None):
        super().__init__()
        self.spec = spec
        self.config = cfg = config or PolicyConfig()
        h = cfg.history
        act = spec.action
        if act.low is None or act.high is None or not np.all(np.isfinite(act.low + act.high)):
            raise Sim2PiError("the spec's action feature needs finite low/high to scale actions")
        self.act_dim = act.dim
        self.register_buffer("action_low", torch.tensor(act.low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(act.high, dtype=torch.float32))

        self.vector_keys = [k for k in spec.vector_keys]
        self.image_keys = list(spec.image_keys)
        dims = input_dims(spec, cfg)
        self.stat_keys = list(dims)
        step_dim = 0
        for k, d in dims.items():
            self.register_buffer(_mean_name(k), torch.zeros(d))
            self.register_buffer(_std_name(k), torch.ones(d))
            step_dim += d

        # Images: frame stacking (mlp) puts the H frames on the channel axis of one CNN pass; the
        # GRU encodes each frame separately.
        self.encoders = nn.ModuleDict()
        for k in self.image_keys:
            hh, ww, c = spec.observation[k].shape
            in_ch = c * h if cfg.arch == "mlp" else c
            self.encoders[k] = ImageEncoder(in_ch, hh, ww, cfg.cnn_channels, cfg.image_embed)
        n_img = len(self.image_keys) * cfg.image_embed

        if cfg.arch == "mlp":
            trunk_in = step_dim * h + n_img
            self.gru = None
        else:
            self.gru = nn.GRU(step_dim + n_img, cfg.gru_hidden, batch_first=True)
            trunk_in = cfg.gru_hidden
        self.trunk = mlp([trunk_in, *cfg.hidden])
        feat = cfg.hidden[-1] if cfg.hidden else trunk_in
        self.head = make_head(cfg, feat, self.act_dim)

    # -- normalization -------------------------------------------------------------------------

    def set_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Install normalization statistics {key: (mean, std)} (see agent.data.compute_stats)."""
        for k in self.stat_keys:
            if k not in stats:
                raise Sim2PiError(
                    f"normalization statistics lack '{k}'; recompute them with "
                    "agent.data.compute_stats for this spec"
                )
            mean, std = (torch.as_tensor(np.asarray(v, np.float32)) for v in stats[k])
            getattr(self, _mean_name(k)).copy_(mean)
            getattr(self, _std_name(k)).copy_(std)

    def get_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The installed normalization statistics as numpy arrays."""
        return {
            k: (
                getattr(self, _mean_name(k)).numpy().copy(),
                getattr(self, _std_name(k)).numpy().copy(),
            )
            for k in self.stat_keys
        }

    # -- forward -------------------------------------------------------------------------------

    def check_inputs(self, obs: dict[str, Tensor]) -> None:
        """Refuse a missing key or a wrong shape, naming the feature (never reshapes)."""
        from hardware.errors import SpecMismatch

        for k, feat in self.spec.observation.items():
            if k not in obs:
                raise SpecMismatch(k, "presence", "present", "missing")
            want = (self.config.history, *feat.shape)
            if tuple(obs[k].shape[1:]) != want:
                raise SpecMismatch(k, "shape", ("batch", *want), tuple(obs[k].shape))

    def features(self, obs: dict[str, Tensor]) -> Tensor:
        """Trunk features [B, F] of an observation window (inputs [B, H, *shape])."""
        cfg = self.config
        raw = vector_inputs(self.spec, cfg, obs)
        parts = [
            (raw[k] - getattr(self, _mean_name(k))) / getattr(self, _std_name(k))
            for k in self.stat_keys
        ]
        steps = torch.cat(parts, dim=-1) if parts else None  # [B, H, step_dim]
        imgs = []
        for k in self.image_keys:
            x = obs[k]
            b, hh = x.shape[0], x.shape[1]
            x = x.float() * (1.0 / 255.0)  # [B, H, h, w, c]
            x = x.permute(0, 1, 4, 2, 3)  # [B, H, c, h, w]
            if cfg.arch == "mlp":
                e = self.encoders[k](x.reshape(b, -1, x.shape[3], x.shape[4]))  # stacked frames
            else:
                e = self.encoders[k](x.reshape(b * hh, *x.shape[2:])).reshape(b, hh, -1)
            imgs.append(e)
        if self.gru is None:
            flat = [] if steps is None else [steps.flatten(1)]
            z = torch.cat(flat + imgs, dim=-1)
        else:
            seq = ([] if steps is None else [steps]) + imgs
            out, _ = self.gru(torch.cat(seq, dim=-1))
            z = out[:, -1]
        return self.trunk(z)

    def normalize_action(self, action: Tensor) -> Tensor:
        """Action in spec units → [-1, 1]."""
        return 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0

    def unnormalize_action(self, u: Tensor) -> Tensor:
        """[-1, 1] → action in spec units, clipped to the spec's range."""
        a = self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)
        return torch.maximum(torch.minimum(a, self.action_high), self.action_low)

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        """The deployed action [B, D]: decoded, scaled to the spec's units and clipped."""
        return self.unnormalize_action(self.head.decode(self.features(obs)))

    def loss(self, obs: dict[str, Tensor], action: Tensor) -> Tensor:
        """Per-sample imitation loss [B] of target actions in spec units."""
        return self.head.nll(self.features(obs), self.normalize_action(action))

    def sample(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(action in spec units [B, D], log-prob [B]); for ``head='tanh_gaussian'`` (a density)
        and ``head='discrete'`` (the probability of the drawn bins)."""
        if isinstance(self.head, DiscreteHead):
            u, logp = self.head.sample(self.features(obs))
            return self.unnormalize_action(u), logp
        if not isinstance(self.head, TanhGaussianHead):
            raise Sim2PiError("Policy.sample needs head='tanh_gaussian' or 'discrete'")
        u, logp = self.head.sample(self.features(obs))
        # Affine scaling to [low, high] changes the density by a constant Jacobian.
        scale = 0.5 * (self.action_high - self.action_low)
        return self.unnormalize_action(u), logp - torch.log(scale).sum()

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """numpy convenience: window dict {key: [B, H, ...]} → actions [B, D] float32."""
        was = self.training
        self.eval()
        t = {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
        out = self(t).numpy()
        self.train(was)
        return out


def pose_index(spec: Spec) -> tuple[int, int, int, int] | None:
    """Indices of x, y, cos, sin of the odometry pose in ``observation``, or None if absent."""
    feat = spec.observation.get("observation")
    if feat is None or feat.names is None or not set(POSE_NAMES) <= set(feat.names):
        return None
    ix, iy, ic, is_ = (feat.names.index(n) for n in POSE_NAMES)
    return ix, iy, ic, is_


def robot_frame(obs: Any, point: Any, pose: tuple[int, int, int, int]) -> tuple[Any, Any]:
    """``point`` [..., 2] in the frame of the pose held by ``obs`` [..., dim] (numpy arrays or
    torch tensors alike): (ahead, left), each [..., 1]. The one transform behind the ``ego_``
    inputs, for GC-BC's network and for SAC+HER's numpy features."""
    ix, iy, ic, is_ = pose
    x, y = obs[..., ix : ix + 1], obs[..., iy : iy + 1]
    c, s = obs[..., ic : ic + 1], obs[..., is_ : is_ + 1]
    dx, dy = point[..., 0:1] - x, point[..., 1:2] - y
    return c * dx + s * dy, c * dy - s * dx


def input_dims(spec: Spec, cfg: PolicyConfig) -> dict[str, int]:
    """Per-step vector inputs of the network (before normalization) and their sizes, in order:
    the spec's vector features, then the derived goal inputs."""
    dims = {k: spec.observation[k].dim for k in spec.vector_keys}
    if spec.goal_keys is not None:
        a, d = spec.goal_keys
        if cfg.goal_delta:
            dims[GOAL_DELTA] = spec.observation[d].dim
        if cfg.egocentric and pose_index(spec) is not None and spec.observation[d].dim == 2:
            dims[EGO_PREFIX + d] = 2
            dims[EGO_PREFIX + a] = 2
    return dims


def vector_inputs(spec: Spec, cfg: PolicyConfig, obs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The raw per-step inputs named by :func:`input_dims` from observation tensors [..., dim].

    Shared by the network and :func:`agent.data.compute_stats`, so statistics and inputs agree.
    """
    out = {k: obs[k].float() for k in spec.vector_keys}
    dims = input_dims(spec, cfg)
    if spec.goal_keys is not None:
        a, d = spec.goal_keys
        if GOAL_DELTA in dims:
            out[GOAL_DELTA] = obs[d].float() - obs[a].float()
        if EGO_PREFIX + d in dims:
            pose = pose_index(spec)
            assert pose is not None  # input_dims adds ego_ inputs only with a pose
            o = obs["observation"].float()
            for k in (d, a):
                out[EGO_PREFIX + k] = torch.cat(robot_frame(o, obs[k].float(), pose), dim=-1)
    return {k: out[k] for k in dims}


def make_head(cfg: PolicyConfig, in_dim: int, act_dim: int) -> Head:
    """The head named by ``cfg.head``."""
    if cfg.head == "mse":
        return DeterministicHead(in_dim, act_dim)
    if cfg.head == "gmm":
        return GMMHead(in_dim, act_dim, cfg.modes, cfg.min_log_std, cfg.max_log_std)
    if cfg.head == "discrete":
        return DiscreteHead(in_dim, act_dim, cfg.bins)
    return TanhGaussianHead(in_dim, act_dim, cfg.min_log_std, cfg.max_log_std)


def _mean_name(key: str) -> str:
    return f"norm_{key}_mean"


def _std_name(key: str) -> str:
    return f"norm_{key}_std"
