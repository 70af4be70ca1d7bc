"""Labelled data: loaders, the training mix, intent labels and their teacher."""
