"""Pneumonia opacity boxes with Ultralytics YOLOv8 (AGPL-3.0): the only package that imports ultralytics."""
