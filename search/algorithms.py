"""RS, REA and REINFORCE, vanilla and G-variant, as pure functions of (space, trial, rng, params, warm).

Each algorithm queries until the trial raises ``BudgetExhausted``; the caller catches it. ``warm`` is a
sequence of arch_ids (a candidate list's best first) queried before anything else, as ordinary queries
that count against the budget. The G-variant (``trial.guided``) is the best-of-N filter of the GradSign
paper's code (cmu-catalyst/GradSign ``autodl/``), N = ``trial.proposals``:
- G-RS queries the best-scored of N uniformly random archs;
- G-REA makes the child the best-scored of N single-edge mutations of the tournament's parent (the
  initial population stays random, as in that code);
- G-REINFORCE queries the best-scored of N single-edge mutations of the policy's sample, and updates the
  policy with that sample's log-probability and the queried arch's reward (as in that code).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .trial import Trial


def random_search(space, trial: Trial, rng: np.random.Generator, params: dict, warm=()) -> None:
    """Query random archs; the pick is the best validation accuracy seen (NB201 ``RANDOM``)."""
    for arch in warm:
        trial.query(arch)
    n = trial.proposals
    while True:
        if trial.guided:
            arch = trial.best_of([space.random(rng) for _ in range(n)])
        else:
            arch = space.random(rng)
        trial.query(arch)


def regularized_evolution(space, trial: Trial, rng: np.random.Generator, params: dict, warm=()) -> None:
    """Aging evolution (Real et al. 2019): population ``population``, tournament of ``tournament`` drawn
    with replacement, the parent's child replaces the oldest member; the pick is the best seen."""
    size, tournament = int(params["population"]), int(params["tournament"])
    population: deque[tuple[int, float]] = deque()
    for arch in warm:
        population.append((arch, trial.query(arch)))
        if len(population) > size:
            population.popleft()
    while len(population) < size:
        arch = space.random(rng)
        population.append((arch, trial.query(arch)))
    n = trial.proposals
    while True:
        members = rng.integers(len(population), size=tournament)
        parent = max((population[int(i)] for i in members), key=lambda m: m[1])[0]
        if trial.guided:
            child = trial.best_of([space.mutate(parent, rng) for _ in range(n)])
        else:
            child = space.mutate(parent, rng)
        population.append((child, trial.query(child)))
        population.popleft()


class _Adam:
    """torch.optim.Adam's update (defaults betas 0.9/0.999, eps 1e-8) on one numpy array."""

    def __init__(self, shape, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> None:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def reinforce(space, trial: Trial, rng: np.random.Generator, params: dict, warm=()) -> None:
    """REINFORCE (Williams 1992) as in the NB201 searches: an independent softmax policy over each edge's
    ops (logits initialised at 1e-3 x N(0, 1)), reward = validation accuracy, baseline = a bias-corrected
    exponential moving average with momentum ``baseline_momentum`` updated before the advantage is taken,
    Adam with ``learning_rate``; the pick is the best reward seen (not the policy's argmax)."""
    logits = 1e-3 * rng.standard_normal((space.num_vars, space.num_choices))
    adam = _Adam(logits.shape, float(params["learning_rate"]))
    momentum = float(params["baseline_momentum"])
    num = den = 0.0
    rows = np.arange(space.num_vars)
    n = trial.proposals

    def probabilities() -> np.ndarray:
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def update(actions: np.ndarray, probs: np.ndarray, reward: float) -> None:
        nonlocal num, den
        num = momentum * num + (1 - momentum) * reward
        den = momentum * den + (1 - momentum)
        advantage = reward - num / den
        grad = probs.copy()  # d(-log pi(a))/d logits = softmax - onehot(a), per edge
        grad[rows, actions] -= 1.0
        adam.step(logits, grad * advantage)

    for arch in warm:
        probs = probabilities()
        update(space.encode(arch), probs, trial.query(arch))
    while True:
        probs = probabilities()
        u = rng.random(space.num_vars)
        actions = np.minimum((probs.cumsum(axis=1) < u[:, None]).sum(axis=1), space.num_choices - 1)
        sample = space.decode(actions)
        if trial.guided:
            arch = trial.best_of([space.mutate(sample, rng) for _ in range(n)])
        else:
            arch = sample
        update(actions, probs, trial.query(arch))
