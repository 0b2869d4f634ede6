#!/bin/bash
echo "fix applied"
