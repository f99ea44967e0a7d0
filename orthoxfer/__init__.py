"""orthoxfer: carry task vectors between independently pre-trained models with orthogonal similarity transforms."""

__version__ = "0.1.0"
