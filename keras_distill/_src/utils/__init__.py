"""Helpers every subpackage may use: model inspection, inputs, tables, printing, TFLite."""
