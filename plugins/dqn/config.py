from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DQNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # collection
    train_freq: int = Field(32, ge=1, description="Steps per environment copy between updates "
                                                  "(env steps per update = env.num_envs x train_freq).")
    learning_starts: int = Field(1000, ge=0, description="Transitions in the replay buffer before the first update.")
    buffer_size: int = Field(100_000, ge=1, description="Replay buffer capacity in transitions (oldest dropped first).")
    # exploration
    start_e: float = Field(1.0, ge=0, le=1, description="Epsilon of the epsilon-greedy behaviour policy at the start.")
    end_e: float = Field(0.04, ge=0, le=1, description="Epsilon after the decay.")
    exploration_fraction: float = Field(0.16, ge=0, le=1, description="Share of the run's env steps over which "
                                                                      "epsilon decays linearly from start_e to end_e.")
    # optimisation
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    minibatch_size: int = Field(64, ge=1, description="Transitions sampled (uniformly, with replacement) per gradient step.")
    gradient_steps: int = Field(128, ge=1, description="Gradient steps per update.")
    loss: Literal["huber", "mse"] = Field("huber", description="TD loss: huber (smooth L1, delta 1) or mse.")
    double_q: bool = Field(True, description="Double DQN: the online network picks the next action, "
                                             "the target network values it (False: the target's max).")
    batched_targets: bool = Field(True, description="Draw the batches of the gradient steps up to the next target "
                                                    "update at once and run the target network over all their next "
                                                    "observations in one pass (the same draws and values as one pass "
                                                    "per step, fewer small ops; False: one pass per step).")
    overlap_targets: bool = Field(True, description="With batched_targets on a CPU where torch leaves a core free: "
                                                    "run the target network's passes on a second thread, ahead of "
                                                    "the gradient steps (the same values; False: in line).")
    # target network
    target_update_interval: int = Field(128, ge=1, description="Gradient steps between target network updates.")
    tau: float = Field(1.0, gt=0, le=1, description="Target update weight: 1 copies the online network (hard update), "
                                                    "< 1 moves the target by tau toward it (Polyak).")
