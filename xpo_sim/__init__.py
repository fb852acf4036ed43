"""xpo_sim: exact laboratory for exploration in preference learning (XPO, DPO, online DPO).

Deterministic token MDPs whose KL-regularized optimum is computed exactly, so the regret
and coverage of every policy are exact numbers. See ``README.md`` and the module
docstrings for the mathematics.
"""

from xpo_sim import checks, envs, losses, threads
from xpo_sim.algorithms import XPO, Algorithm, HybridDPO, OfflineDPO, OnlineDPO
from xpo_sim.data import PreferenceData
from xpo_sim.loop import run
from xpo_sim.mdp import TokenMDP, TrajectoryBatch
from xpo_sim.methods import IPO, LNDPO, RLHF, SELM, VPO, CountUCB, ExPO, InverseQStar, IterativeDPO, SEPOPO
from xpo_sim.metrics import coverability, optimal_mass, regret, seen_mass
from xpo_sim.policies import (ImplicitRewardClass, LinearRewardClass, LogitsClass, PolicyClass, PolicyHooks,
                              RewardClass)
from xpo_sim.preferences import Argmax, BradleyTerry, PreferenceOracle, SimulatedTeacher
from xpo_sim.rounds import RoundContext, Sampler, register_sampler
from xpo_sim.soft import PolicyEvaluation, SoftSolution, evaluate, occupancy, solve_soft
from xpo_sim.threads import get_threads, set_threads
from xpo_sim.trajectories import sample_trajectories, trajectory_logp, trajectory_reward

__version__ = "0.1.0"

__all__ = [
    "TokenMDP",
    "TrajectoryBatch",
    "SoftSolution",
    "PolicyEvaluation",
    "solve_soft",
    "evaluate",
    "occupancy",
    "regret",
    "coverability",
    "optimal_mass",
    "seen_mass",
    "sample_trajectories",
    "trajectory_logp",
    "trajectory_reward",
    "PreferenceData",
    "PolicyClass",
    "RewardClass",
    "PolicyHooks",
    "ImplicitRewardClass",
    "LinearRewardClass",
    "LogitsClass",
    "BradleyTerry",
    "Argmax",
    "PreferenceOracle",
    "SimulatedTeacher",
    "Sampler",
    "register_sampler",
    "RoundContext",
    "Algorithm",
    "OfflineDPO",
    "OnlineDPO",
    "HybridDPO",
    "XPO",
    "IterativeDPO",
    "IPO",
    "LNDPO",
    "SELM",
    "ExPO",
    "RLHF",
    "CountUCB",
    "InverseQStar",
    "SEPOPO",
    "VPO",
    "run",
    "set_threads",
    "get_threads",
    "threads",
    "envs",
    "losses",
]
