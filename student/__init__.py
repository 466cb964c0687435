"""Student: small models trained on teacher outputs (encoder classifier or causal LM, with LoRA)."""
from student.base import Student
from student.kinds import load_student

__all__ = ["Student", "load_student"]
