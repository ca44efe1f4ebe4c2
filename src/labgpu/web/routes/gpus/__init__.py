"""gpus: the routes of GPUs and bookings."""
