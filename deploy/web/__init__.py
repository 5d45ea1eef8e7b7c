"""Web teleoperation page served from the robot."""
