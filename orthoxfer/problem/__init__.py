"""The problem a method solves: few-shot tasks, the inputs each site sees, and the alignment problem."""
