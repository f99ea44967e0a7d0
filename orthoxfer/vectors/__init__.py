"""What is carried: sites (where a task vector lives), task vectors, and control vectors."""
