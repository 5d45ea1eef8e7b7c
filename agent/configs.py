"""Config dataclasses of the policies and trainers, importable without torch.

``sim2pi --help`` must work on an install without torch (docs/architecture.md), and the CLI builds
the trainers' options from these dataclasses, so they live here rather than at the top of
:mod:`agent.gcbc` / :mod:`agent.dagger` (which re-export them). Every field's ``metadata["doc"]``
is its ``--help`` text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from agent.relabel import RelabelConfig
from hardware.errors import Sim2PiError

ARCHS = ("mlp", "gru")
HEADS = ("mse", "gmm", "discrete", "tanh_gaussian")


@dataclass
class PolicyConfig:
    """Network architecture. Saved with every checkpoint; rebuilt from it on load."""

    arch: str = field(
        default="mlp",
        metadata={
            "doc": "history handling: 'mlp' flattens the window (frame stacking), 'gru' runs a GRU"
        },
    )
    head: str = field(
        default="mse",
        metadata={
            "doc": "action head: 'mse' deterministic, 'gmm' Gaussian mixture, 'discrete' per-dimension "
            "bins, 'tanh_gaussian' squashed Gaussian (SAC)"
        },
    )
    history: int = field(default=1, metadata={"doc": "history length H (observations per input)"})
    hidden: tuple[int, ...] = field(default=(256, 256), metadata={"doc": "MLP trunk widths"})
    gru_hidden: int = field(default=128, metadata={"doc": "GRU state size (arch='gru')"})
    image_embed: int = field(default=128, metadata={"doc": "CNN image embedding size"})
    cnn_channels: tuple[int, ...] = field(
        default=(16, 32, 32), metadata={"doc": "channels of the CNN's conv layers (64x64 input)"}
    )
    modes: int = field(default=5, metadata={"doc": "number of Gaussian modes K (head='gmm')"})
    bins: int = field(default=21, metadata={"doc": "bins per action dimension (head='discrete')"})
    goal_delta: bool = field(
        default=True,
        metadata={"doc": "also feed desired_goal - achieved_goal (goal-conditioned specs)"},
    )
    egocentric: bool = field(
        default=False,
        metadata={
            "doc": "also feed the goal points relative to the robot, in the robot frame (specs whose "
            "'observation' names x, y, cos_theta, sin_theta)"
        },
    )
    min_log_std: float = field(default=-5.0, metadata={"doc": "lower clamp of log std (gmm, sac)"})
    max_log_std: float = field(default=2.0, metadata={"doc": "upper clamp of log std (gmm, sac)"})

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)
        if self.arch not in ARCHS:
            raise Sim2PiError(f"unknown policy arch '{self.arch}'; choose one of {list(ARCHS)}")
        if self.head not in HEADS:
            raise Sim2PiError(f"unknown policy head '{self.head}'; choose one of {list(HEADS)}")
        if self.history < 1:
            raise Sim2PiError(f"history must be >= 1 (got {self.history}); use 1 for no history")
        if self.modes < 1 or self.bins < 2:
            raise Sim2PiError("need modes >= 1 (gmm) and bins >= 2 (discrete)")
        if len(self.cnn_channels) != 3:
            raise Sim2PiError("cnn_channels needs exactly three conv widths, e.g. (16, 32, 32)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["cnn_channels"] = list(self.cnn_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyConfig:
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known
        }
        return cls(**kw)


@dataclass
class GCBCConfig:
    """GC-BC training options (each one is a ``sim2pi train gcbc`` option)."""

    data: str | None = field(
        default=None, metadata={"doc": "dataset directory (LeRobot v3.0, from `sim2pi record`)"}
    )
    out: str = field(
        default="runs/gcbc", metadata={"doc": "run directory for checkpoints and logs"}
    )
    relabel: str = field(
        default="none",
        metadata={
            "doc": "hindsight goal strategy: none | final | future | geometric | episode. "
            "On demos that drive to their recorded goal, none scored best here (future cost 20-30 "
            "points on RoverReach with 20 demos and on RoverPush); relabel when the recorded goals "
            "are not where the robot went (drive-around data), see README"
        },
    )
    relabel_ratio: float = field(
        default=0.8, metadata={"doc": "fraction of sampled steps whose goal is relabeled"}
    )
    relabel_gamma: float = field(
        default=0.98, metadata={"doc": "geometric strategy: offset ~ Geometric(1 - gamma)"}
    )
    skip_reached: bool = field(
        default=True,
        metadata={
            "doc": "do not imitate steps whose (relabeled) goal is already reached at that step: "
            "their action says nothing about how to reach it"
        },
    )
    image_shift: int = field(
        default=4,
        metadata={"doc": "random-shift augmentation of camera images by up to N pixels (0: off)"},
    )
    head: str = field(default="mse", metadata={"doc": "action head: mse | gmm | discrete"})
    arch: str = field(
        default="mlp", metadata={"doc": "history handling: mlp (frame stacking) | gru"}
    )
    history: int = field(default=1, metadata={"doc": "history length H (observations per input)"})
    hidden: tuple[int, ...] = field(default=(256, 256), metadata={"doc": "MLP trunk widths"})
    egocentric: bool = field(
        default=True,
        metadata={"doc": "also feed goal points in the robot frame (tasks with an odometry pose)"},
    )
    modes: int = field(default=5, metadata={"doc": "Gaussian modes (head gmm)"})
    bins: int = field(default=21, metadata={"doc": "bins per action dimension (head discrete)"})
    steps: int = field(default=3000, metadata={"doc": "gradient steps"})
    batch_size: int = field(default=256, metadata={"doc": "samples per gradient step"})
    lr: float = field(default=1e-3, metadata={"doc": "Adam learning rate (cosine-decayed to 10%)"})
    weight_decay: float = field(default=0.0, metadata={"doc": "AdamW weight decay"})
    grad_clip: float = field(default=10.0, metadata={"doc": "gradient norm clip (0: off)"})
    intervention_weight: float = field(
        default=1.0,
        metadata={
            "doc": "sampling weight of episodes with human interventions (relative to others)"
        },
    )
    seed: int = field(default=0, metadata={"doc": "random seed (weights, sampling, relabeling)"})
    eval_every: int = field(
        default=0,
        metadata={"doc": "evaluate in sim every N steps on validation goals (0: only at the end)"},
    )
    eval_episodes: int = field(default=20, metadata={"doc": "episodes per evaluation (0: none)"})
    save_every: int = field(default=1000, metadata={"doc": "checkpoint every N steps"})
    log_every: int = field(default=100, metadata={"doc": "log scalars every N steps"})
    description: str = field(
        default="rover",
        metadata={
            "doc": "robot description for evaluation envs (must match the data's robot hash)"
        },
    )
    threads: int = field(default=1, metadata={"doc": "torch CPU threads"})
    resume: bool = field(default=False, metadata={"doc": "continue the run in --out"})
    progress: bool = field(default=True, metadata={"doc": "show a progress bar"})

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.steps < 0 or self.batch_size < 1:
            raise Sim2PiError("need steps >= 0 and batch_size >= 1")
        if self.head not in ("mse", "gmm", "discrete"):
            raise Sim2PiError(f"GC-BC head must be mse, gmm or discrete (got '{self.head}')")
        self.relabel_config()  # validates the relabeling options
        self.policy_config()

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(
            arch=self.arch,
            head=self.head,
            history=self.history,
            hidden=self.hidden,
            modes=self.modes,
            bins=self.bins,
            egocentric=self.egocentric,
        )

    def relabel_config(self) -> RelabelConfig:
        return RelabelConfig(
            strategy=self.relabel, ratio=self.relabel_ratio, gamma=self.relabel_gamma
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GCBCConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class DaggerConfig(GCBCConfig):
    """DAgger options; the GC-BC options configure the network and each training phase
    (``steps`` is the initial BC phase)."""

    out: str = field(default="runs/dagger", metadata={"doc": "run directory"})
    task: str | None = field(
        default=None, metadata={"doc": "task (reach | push | seek); default: the dataset's"}
    )
    demos: int = field(
        default=0,
        metadata={
            "doc": "collect this many expert demos as initial data (instead of / besides --data)"
        },
    )
    demo_noise: float = field(
        default=0.0,
        metadata={"doc": "DART noise std on the executed action when collecting the initial demos"},
    )
    rounds: int = field(default=4, metadata={"doc": "DAgger rounds (collect, aggregate, retrain)"})
    episodes_per_round: int = field(default=20, metadata={"doc": "learner episodes per round"})
    beta: float = field(
        default=0.5, metadata={"doc": "probability of executing the expert's action in round 1"}
    )
    beta_decay: float = field(default=0.5, metadata={"doc": "beta multiplier per round"})
    dart_noise: float = field(
        default=0.05,
        metadata={"doc": "Gaussian noise std added to executed actions while collecting"},
    )
    steps_per_round: int = field(default=1000, metadata={"doc": "gradient steps after each round"})
    human: str | None = field(
        default=None,
        metadata={
            "doc": "dataset with human take-overs to merge (intervention episodes get "
            "--intervention-weight)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 0 or self.episodes_per_round < 1:
            raise Sim2PiError("need rounds >= 0 and episodes_per_round >= 1")
        if not 0.0 <= self.beta <= 1.0 or not 0.0 <= self.beta_decay <= 1.0:
            raise Sim2PiError("beta and beta_decay must lie in [0, 1]")
        if self.dart_noise < 0 or self.demo_noise < 0:
            raise Sim2PiError("noise std must be >= 0")

    def beta_at(self, round_: int) -> float:
        """beta of round ``round_`` (1-based)."""
        return self.beta * self.beta_decay ** (round_ - 1)
