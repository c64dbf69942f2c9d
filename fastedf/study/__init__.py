"""The batch-size study (`fastedf sweep`, `fastedf memory`): the course's first assignment and its three claims
(training time, memory, loss and accuracy against the batch size), and the lr-grid science past it.

Modules, lowest first (each imports only those above it and the engine):
data, distributed, batch_scaling, training, options, results, memory, one_run (the runs and their files);
claims and lr_grid (analysis); report and plots (rendering); sweep (the command).
"""
