"""From predicted outcomes to one action per customer, and its evaluation."""

from .allocate import Allocation, GreedyAllocator, allocate, solve_milp
from .config import load_decision_config
from .counterfactual import predict_actions
from .evaluate import ipw_value, qini_curve, uplift_curve
from .values import ValueModel, column_name

__all__ = ["Allocation", "GreedyAllocator", "ValueModel", "allocate",
           "column_name", "ipw_value", "load_decision_config",
           "predict_actions", "qini_curve", "solve_milp", "uplift_curve"]
