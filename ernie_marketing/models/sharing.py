"""Expert-and-gate sharing layers between the encoder and the task heads.

Hard sharing feeds the same representation to every head and needs no
layer here. The two layers below give each task its own mixture of expert
outputs, and the task heads act as the towers:

- MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts", KDD 2018): shared experts, and one softmax
  gate per task over them, computed from the input.
- PLE (Tang et al., "Progressive Layered Extraction", RecSys 2020): shared
  experts plus experts owned by each task, stacked in extraction levels.
  A task's gate mixes its own and the shared experts. The shared gate of a
  level below the last mixes all experts and feeds the next level's shared
  experts.
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

SHARING_TYPES = ("hard", "mmoe", "ple")


class Expert(nn.Sequential):
    """One expert: Linear, GELU and dropout."""

    def __init__(self, input_size, hidden_size, dropout=0.1):
        super().__init__(nn.Linear(input_size, hidden_size), nn.GELU(),
                         nn.Dropout(dropout))


def _mix(gate, inputs, experts):
    """Return the gate-weighted sum of `experts` outputs and the gate weights.

    The gate weights are a softmax, so each row sums to one.
    """
    weights = F.softmax(gate(inputs), axis=-1)
    outputs = paddle.stack([expert(inputs) for expert in experts], axis=1)
    return (weights.unsqueeze(-1) * outputs).sum(axis=1), weights


class MMoE(nn.Layer):
    """Shared experts mixed by one softmax gate per task."""

    def __init__(self, input_size, num_tasks, num_experts=4,
                 expert_hidden_size=256, dropout=0.1):
        super().__init__()
        self.experts = nn.LayerList(
            [Expert(input_size, expert_hidden_size, dropout)
             for _ in range(num_experts)])
        self.gates = nn.LayerList(
            [nn.Linear(input_size, num_experts) for _ in range(num_tasks)])
        self.output_size = expert_hidden_size

    def forward(self, inputs):
        """Return one representation per task, in task order."""
        return [output for output, _ in self._mixtures(inputs)]

    def gate_weights(self, inputs):
        """Return each task's gate weights, [batch, num_experts] per task."""
        return [weights for _, weights in self._mixtures(inputs)]

    def _mixtures(self, inputs):
        return [_mix(gate, inputs, self.experts) for gate in self.gates]


class ExtractionLevel(nn.Layer):
    """One PLE extraction level: task and shared experts with their gates.

    The level reads one input per task plus the shared input, and returns
    the same. Without `shared_output` (the last level) it has no shared
    gate and returns no shared output.
    """

    def __init__(self, input_size, num_tasks, num_shared_experts,
                 num_task_experts, expert_hidden_size, dropout=0.1,
                 shared_output=True):
        super().__init__()

        def experts(count):
            return nn.LayerList([Expert(input_size, expert_hidden_size, dropout)
                                 for _ in range(count)])

        self.shared_experts = experts(num_shared_experts)
        self.task_experts = nn.LayerList(
            [experts(num_task_experts) for _ in range(num_tasks)])
        own = num_task_experts + num_shared_experts
        self.task_gates = nn.LayerList(
            [nn.Linear(input_size, own) for _ in range(num_tasks)])
        self.shared_gate = None
        if shared_output:
            self.shared_gate = nn.Linear(
                input_size, num_shared_experts + num_tasks * num_task_experts)

    def forward(self, task_inputs, shared_input):
        """Return (task outputs, shared output or None, gate weights).

        The gate weights are the task gates' in task order, then the shared
        gate's when the level has one.
        """
        shared_outputs = [expert(shared_input)
                          for expert in self.shared_experts]
        task_outputs, gates = [], []
        all_task_outputs = []
        for inputs, experts, gate in zip(task_inputs, self.task_experts,
                                         self.task_gates):
            # A task expert reads its task's input from the level below.
            own = [expert(inputs) for expert in experts]
            all_task_outputs += own
            weights = F.softmax(gate(inputs), axis=-1)
            stacked = paddle.stack(own + shared_outputs, axis=1)
            task_outputs.append((weights.unsqueeze(-1) * stacked).sum(axis=1))
            gates.append(weights)
        if self.shared_gate is None:
            return task_outputs, None, gates
        weights = F.softmax(self.shared_gate(shared_input), axis=-1)
        stacked = paddle.stack(all_task_outputs + shared_outputs, axis=1)
        shared = (weights.unsqueeze(-1) * stacked).sum(axis=1)
        return task_outputs, shared, gates + [weights]


class PLE(nn.Layer):
    """Progressive layered extraction over `num_levels` extraction levels."""

    def __init__(self, input_size, num_tasks, num_shared_experts=2,
                 num_task_experts=1, expert_hidden_size=256, num_levels=2,
                 dropout=0.1):
        super().__init__()
        self.num_tasks = num_tasks
        self.levels = nn.LayerList([
            ExtractionLevel(input_size if level == 0 else expert_hidden_size,
                            num_tasks, num_shared_experts, num_task_experts,
                            expert_hidden_size, dropout,
                            shared_output=level < num_levels - 1)
            for level in range(num_levels)])
        self.output_size = expert_hidden_size

    def forward(self, inputs):
        """Return one representation per task, in task order."""
        return self._run(inputs)[0]

    def gate_weights(self, inputs):
        """Return every gate's weights, level by level (see ExtractionLevel)."""
        return self._run(inputs)[1]

    def _run(self, inputs):
        task_inputs, shared = [inputs] * self.num_tasks, inputs
        all_gates = []
        for level in self.levels:
            task_inputs, shared, gates = level(task_inputs, shared)
            all_gates += gates
        return task_inputs, all_gates


def build_sharing(spec, input_size, num_tasks):
    """Return the sharing layer for a `sharing` spec, or None for hard sharing.

    `spec` is a mapping with the fields of `SharingConfig`, or None, which
    means hard sharing.
    """
    if not spec or spec["type"] == "hard":
        return None
    if spec["type"] == "mmoe":
        return MMoE(input_size, num_tasks, spec["num_experts"],
                    spec["expert_hidden_size"], spec.get("dropout", 0.1))
    if spec["type"] == "ple":
        return PLE(input_size, num_tasks, spec["num_shared_experts"],
                   spec["num_task_experts"], spec["expert_hidden_size"],
                   spec["num_levels"], spec.get("dropout", 0.1))
    raise ValueError(f"sharing type {spec['type']!r} is invalid: expected one "
                     f"of {SHARING_TYPES}")
