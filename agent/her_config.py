"""The SAC+HER training config (torch-free, so the CLI can build its options without torch).

Every field is a ``sim2pi train her`` option; the algorithm is in :mod:`agent.her`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hardware.errors import Sim2PiError


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


# the string fields with a fixed set of values (checked in HerConfig.__post_init__)
CHOICES: dict[str, tuple[str, ...]] = {
    "actor": ("gaussian", "discrete"),
    "reward_on": ("truth", "estimate", "both", "staged"),
    "bc_goals": ("recorded", "all"),
    "crr_goals": ("real", "all"),
    "near_starts_side": ("any", "behind"),
}


@dataclass
class HerConfig:
    """SAC+HER training settings. Every field is a ``sim2pi train her`` option."""

    task: str = _f("reach", "task: reach | push (the sim2pi/Rover*-v0 goal envs)")
    robot: str = _f("rover", "robot description (YAML path or shipped name)")
    env_id: str | None = _f(None, "gymnasium env id; default: the task's sim2pi env")
    seed: int = _f(0, "random seed (envs, sampling, network init)")
    minutes: float = _f(5.0, "wall-clock training budget in minutes (evaluation time excluded)")
    total_steps: int = _f(2_000_000, "env-step budget (whichever of minutes/steps ends first)")
    target_success: float | None = _f(
        None,
        "stop as soon as an evaluation reaches this success "
        "rate (e.g. 0.95); None trains for the whole budget",
    )
    envs: int = _f(8, "parallel envs")
    workers: int = _f(1, "env worker processes (0 = step envs in the learner's process)")
    threads: int = _f(1, "torch threads of the learner")
    # learning
    gamma: float = _f(
        0.98,
        "discount; 0.98 looks about 50 steps (2.5 s at 20 Hz) ahead. Push without demos learned "
        "faster with 0.99 and --n-step 5 (worse with 0.99 alone), best with --reward-on staged",
    )
    n_step: int = _f(
        1,
        "steps of reward summed before bootstrapping (n-step returns, judged against the relabeled "
        "goal at each step; cut short where the goal is reached or the episode ends). Not "
        "corrected for the policy that collected the data; the sparse reward travels n times as "
        "far per update",
    )
    lr: float = _f(1e-3, "Adam learning rate of actor and critic (rl-zoo FetchReach SAC: 1e-3)")
    alpha_lr: float = _f(1e-3, "learning rate of the entropy temperature")
    init_alpha: float = _f(0.1, "initial entropy temperature")
    target_entropy: float | None = _f(None, "SAC target entropy; None = -action_dim")
    tau: float = _f(0.05, "Polyak rate of the target critics (HER paper: 0.05)")
    batch_size: int = _f(256, "transitions per gradient step (RL part; demos are extra)")
    utd: float = _f(0.5, "gradient steps per env step (update-to-data ratio)")
    learning_starts: int = _f(2000, "env steps of uniform random actions before learning")
    buffer_size: int = _f(1_000_000, "replay capacity in transitions")
    hidden: tuple[int, ...] = _f((128, 128), "widths of the actor's and critics' hidden layers")
    egocentric: bool = _f(
        True,
        "also feed the goal and the achieved goal in the robot frame (tasks with an odometry "
        "pose); the same input GC-BC uses",
    )
    actor: str = _f(
        "gaussian",
        "actor head: gaussian (SAC's squashed Gaussian, entropy-regularized) | discrete (each "
        "wheel categorical over --bins, autoregressive like GC-BC's discrete head, improved by "
        "advantage-filtered regression, CRR: clone the batch actions the critics rate above the "
        "actor's own). A Gaussian averages the push expert's switches between driving around the "
        "box and pushing it; bins keep one of them. Made for --demos",
    )
    bins: int = _f(21, "bins per wheel of the discrete actor")
    crr_samples: int = _f(
        4, "discrete actor: actions drawn from it per state to estimate its value V(s)"
    )
    crr_goals: str = _f(
        "real",
        "discrete actor: the batch rows its CRR loss clones from: real (goals the episode was "
        "given; demos keep theirs) | all (hindsight goals too: the actions were not aimed at them, "
        "and cloning them cost GC-BC 95 -> 75 % on push)",
    )
    noise_rho: float = _f(
        0.9,
        "temporal correlation of the exploration noise: the Gaussian noise of SAC's sampled "
        "actions (and of the random warm-up actions) is an AR(1) process with this coefficient and "
        "unit variance (0 = SAC's independent noise). Per-step independent noise makes a "
        "differential-drive robot jitter in place",
    )
    # hindsight
    strategy: str = _f(
        "future", "HER goal strategy: future | final | episode | geometric | none (agent.relabel)"
    )
    her_k: int = _f(4, "relabeled goals per real goal (relabel probability k/(k+1))")
    terminate_on_success: bool = _f(
        True,
        "the env ends episodes on success, so relabeled successes are terminal (no bootstrapping)",
    )
    episode_end: str = _f(
        "env",
        "where training episodes end on success: env (the env's own test, on the robot's estimate "
        "for push, as on the Pi) | reward (where the rewards put the goal reached: the true box "
        "with reward_on truth, truth and estimate with both and staged; the same as env with "
        "estimate). Evaluation always uses the env's own test",
    )
    shaping: float = _f(
        0.0,
        "potential-based reward shaping (Ng et al. 1999) on top of the sparse reward: "
        "shaping * (|ag - g| - gamma * |ag' - g|) per transition, on the true achieved goal (the "
        "estimate with reward_on=estimate; |ag' - g| = 0 at a terminal), recomputed for relabeled "
        "goals; leaves the task's optimal policies unchanged; 0 = sparse only",
    )
    reward_on: str = _f(
        "truth",
        "what rewards and relabeled goals are computed on: truth (the simulator's true achieved "
        "goal, e.g. the true box; the policy still reads only its sensors) | estimate (the "
        "achieved goal the robot observes, as on the Pi; a noisy estimate can be gamed) | both "
        "(the goal counts as reached only where the truth and the estimate are both there: "
        "reached and seen, as the env and the Pi judge it) | staged (-1 until the true box is at the "
        "goal, -0.5 while it is there but not seen there, 0 and the end once both are: reaching "
        "pays on its own and seeing on top; the reverse curriculum counts the truth)",
    )
    privileged_critic: bool = _f(
        True,
        "with reward_on=truth or both, the critics also see the true achieved goal (asymmetric "
        "actor-critic; the exported actor does not)",
    )
    near_starts: float = _f(
        0.0,
        "push: share of training episodes started with the robot 0.2-0.4 m from the box and facing "
        "it (an exploration curriculum that needs no demos); evaluation always starts at random",
    )
    near_starts_side: str = _f(
        "any",
        "push, with near_starts: the side of the box the robot starts on: any | behind (the far "
        "side from the goal, so pushing straight on moves the box towards it)",
    )
    reverse_starts: float = _f(
        0.0,
        "push: share of training episodes started from a reverse curriculum (box near the goal, "
        "robot behind it) whose level widens the starts to the task's own as the success rate of "
        "those episodes passes --curriculum-success; needs no demos",
    )
    curriculum_success: float = _f(
        0.3,
        "with reverse_starts: success rate of curriculum episodes (judged as the reward is) at "
        "which the curriculum moves one step (--curriculum-step) towards the task's starts",
    )
    curriculum_step: float = _f(
        0.1,
        "with reverse_starts: how far the curriculum level (0 = box on the goal, 1 = the task's "
        "own starts) moves each time curriculum_success is reached",
    )
    # demonstrations
    demos: str | None = _f(None, "dataset directory of demonstrations (deploy.dataset format)")
    demo_fraction: float = _f(
        0.125,
        "demo transitions per batch, relative to batch_size (Nair et al. 2018: 128 demo + 1024 RL)",
    )
    bc_weight: float = _f(
        10.0,
        "weight of the behaviour-cloning loss on demos; the actor's critic term is divided by its "
        "mean |Q| in batches with demo rows (TD3+BC), so the two stay comparable. On RoverPush a "
        "pretrained actor kept its success with 10 and lost most of it with 1 or 4",
    )
    q_filter: bool = _f(
        False,
        "clone a demo action only where Q(s, a_demo) > Q(s, pi(s)) (Nair et al. 2018), after the "
        "critic warm-up; on RoverPush it dropped a pretrained actor from 40 % to 2-14 %",
    )
    bc_goals: str = _f(
        "recorded",
        "goals of the demo rows in each batch (the BC loss clones their actions): recorded (the "
        "demo's own goal; a relabeled goal is a point the demo passed at speed, see GC-BC's "
        "--relabel) | all (relabeled like the RL rows)",
    )
    critic_warmup: int | None = _f(
        None,
        "gradient steps at the start in which the actor learns only from the BC loss (unfiltered), "
        "not from the critics, so a pretrained actor is not steered by critics that have not "
        "learned yet; None = 20000 after BC pretraining, else 0",
    )
    bc_pretrain: int | None = _f(
        None,
        "gradient steps of behaviour cloning on the demos (recorded goals) before RL; the "
        "pretrained actor then collects from the first step instead of random warm-up actions; "
        "None = 10000 with --demos, else 0",
    )
    demo_restarts: float = _f(
        0.0,
        "share of training episodes started from a state a demo visited instead of a random "
        "start (needs --demos; Nair et al. 2018); evaluation always starts at random",
    )
    # evaluation and output
    eval_every: int = _f(10_000, "env steps between evaluations")
    eval_episodes: int = _f(50, "deterministic episodes per evaluation")
    eval_envs: int = _f(10, "envs used for evaluation (in the learner's process)")
    norm_clip: float = _f(5.0, "clip of normalized inputs in the critic (and std floor 1e-2)")
    out: str | None = _f(
        None,
        "run directory (latest checkpoint, config, tensorboard; RUN/best: the actor of the best "
        "evaluation)",
    )
    resume: bool = _f(
        False,
        "continue the run in --out from its last checkpoint (networks, temperature, optimizer, "
        "input statistics, step count; the replay buffer starts empty again). Without it an --out "
        "that already holds a run is refused rather than overwritten",
    )
    log_every: float = _f(10.0, "seconds between progress log lines")

    @property
    def ends_on_reward(self) -> bool:
        """Training episodes end where the rewards count the goal as reached, not at the env's
        own test (``episode_end="reward"`` with rewards not on the estimate)."""
        return self.episode_end == "reward" and self.reward_on != "estimate"

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise Sim2PiError(
                    f"{name} must be {' or '.join(repr(o) for o in options)}, "
                    f"got {getattr(self, name)!r}"
                )
        if self.envs < 1:
            raise Sim2PiError(f"--envs must be >= 1, got {self.envs}")
        if not 0.0 < self.gamma < 1.0:
            raise Sim2PiError(f"gamma must be in (0, 1), got {self.gamma}")
        if self.utd <= 0:
            raise Sim2PiError(f"utd (gradient steps per env step) must be > 0, got {self.utd}")
        if self.n_step < 1:
            raise Sim2PiError(f"n_step must be >= 1, got {self.n_step}")
        if self.batch_size < 2:
            raise Sim2PiError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.demo_fraction < 0:
            raise Sim2PiError("demo_fraction must be >= 0")
        if not 0.0 <= self.demo_restarts <= 1.0:
            raise Sim2PiError(f"demo_restarts must be in [0, 1], got {self.demo_restarts}")
        shares = (self.near_starts, self.demo_restarts, self.reverse_starts)
        if min(shares) < 0.0 or sum(shares) > 1.0:
            raise Sim2PiError(
                "near_starts, demo_restarts and reverse_starts must be >= 0 and add up to at most "
                f"1, got {self.near_starts}, {self.demo_restarts} and {self.reverse_starts}"
            )
        if self.episode_end not in ("env", "reward"):
            raise Sim2PiError(f"episode_end must be 'env' or 'reward', got '{self.episode_end}'")
        if self.shaping < 0:
            raise Sim2PiError(f"shaping must be >= 0, got {self.shaping}")
        for name in ("curriculum_success", "curriculum_step"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise Sim2PiError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.bins < 2 or self.crr_samples < 1:
            raise Sim2PiError(
                f"bins must be >= 2 and crr_samples >= 1, got {self.bins} and {self.crr_samples}"
            )
        if self.actor == "discrete" and self.q_filter:
            raise Sim2PiError(
                "--q-filter is for the gaussian actor; the discrete actor's CRR loss already "
                "clones only actions the critics rate above its own"
            )
        if self.bc_pretrain is None:
            self.bc_pretrain = 10_000 if self.demos else 0
        if self.critic_warmup is None:
            self.critic_warmup = 20_000 if self.bc_pretrain else 0
        if self.bc_pretrain < 0:
            raise Sim2PiError(f"bc_pretrain must be >= 0 gradient steps, got {self.bc_pretrain}")
        if self.critic_warmup < 0:
            raise Sim2PiError(
                f"critic_warmup must be >= 0 gradient steps, got {self.critic_warmup}"
            )
        if self.bc_pretrain > 0 and not self.demos:
            raise Sim2PiError("--bc-pretrain needs --demos DIR (the demonstrations to clone)")
        if self.demo_restarts > 0 and not self.demos:
            raise Sim2PiError("--demo-restarts needs --demos DIR (the states to restart from)")
        if not 0.0 <= self.noise_rho < 1.0:
            raise Sim2PiError(f"noise_rho must be in [0, 1), got {self.noise_rho}")
        if self.target_success is not None and not 0 < self.target_success <= 1:
            raise Sim2PiError("target_success must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HerConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
