"""course_utils: the code behind the fast-CNN course's notebooks.

Modules, each owning one idea:
  data        datasets as uint8 tensors; DeviceLoader keeps a split on the device
  train       fit / evaluate / checkpoints / DDP
  complexity  parameters, MACs, activation memory, latency
  models      the architecture zoo (create, available)
  exits       the early-exit core shared by SpeedyCNet and edCNN
  speedycnet  the cascade of hierarchical learners and its trainer
  edcnn       exits attached to a backbone, branch training, the budget controller
  nas         search space, REINFORCE controller, random search, weight sharing
  widgets     the live threshold panel
  reproduce   papermill batches that rebuild the results tables
"""
__version__ = "0.1.0"
