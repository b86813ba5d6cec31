"""The controller: event feeds from kopf, a work queue, and one level-based reconcile per object."""
