"""What a deployment's worker nodes cost by the hour: a shipped price table the platform team may override, and
the estimate status and metrics carry. No pricing API is called at reconcile time."""
