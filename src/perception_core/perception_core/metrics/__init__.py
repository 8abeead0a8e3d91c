"""Task metrics in numpy only: shared by training validation, INT8 comparison and bag evaluation."""
