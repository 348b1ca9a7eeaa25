"""The optimizer and its learning-rate schedule: darknet's burn-in, then constant, cosine or step decay; Adam or
darknet's SGD (momentum, weight decay)."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="yolov2")
class BurnInSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """darknet's burn_in (lr * (step / burn_in)^4) followed by constant, cosine or step decay."""

    def __init__(self, learning_rate, total_steps, burn_in, policy, final_fraction=0.01):
        self.learning_rate = learning_rate
        self.total_steps = max(int(total_steps), 1)
        self.burn_in = int(burn_in)
        self.policy = policy
        self.final_fraction = final_fraction

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.learning_rate, "float32")
        progress = ops.clip(step / self.total_steps, 0.0, 1.0)
        if self.policy == "cosine":
            lr = lr * (self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + ops.cos(math.pi * progress)))
        elif self.policy == "steps":  # darknet's steps policy, x0.1 at 80% and 90% of training
            lr = lr * ops.where(progress >= 0.8, 0.1, 1.0) * ops.where(progress >= 0.9, 0.1, 1.0)
        if self.burn_in > 0:
            lr = lr * ops.minimum(ops.power((step + 1) / self.burn_in, 4.0), 1.0)
        return lr

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "burn_in": self.burn_in,
            "policy": self.policy,
            "final_fraction": self.final_fraction,
        }


def make_optimizer(total_steps, optimizer, learning_rate, lr_schedule, burn_in, momentum, weight_decay,
                   lr_factor=1.0, first_stage=True):  # fmt: skip
    """The optimizer config.optimizer_args describes; the burn-in runs in the first stage only and is capped
    at a quarter of it; later stages (unfreeze_after) train at learning_rate x lr_factor."""
    burn_in_steps = min(burn_in, total_steps // 4) if first_stage else 0
    schedule = BurnInSchedule(learning_rate * lr_factor, total_steps, burn_in_steps, lr_schedule)
    if optimizer == "sgd":
        # darknet: momentum .9, decay .0005 (applied as lr * decay * w each step).
        return keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay)
    return keras.optimizers.Adam(schedule)
