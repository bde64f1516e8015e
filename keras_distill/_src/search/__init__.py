"""The search of students that fit a board: `find_student` and what it returns."""
