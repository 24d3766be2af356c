#!/usr/bin/env node
// The compiled CLI (`pnpm build` first). From source: node --import tsx --conditions=vitrage-source packages/cli/src/bin.ts
import '../dist/bin.js'
