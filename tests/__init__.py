"""dtune's tests."""

# What TensorFlow writes to standard error as it loads unless its C++ log level is 2 or
# more: absl's warning that it is not set up yet, the oneDNN notice, the CPU features.
TF_START_UP_LINES = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard")
