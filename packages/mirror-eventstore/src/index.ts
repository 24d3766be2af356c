export { defaultMirrorOptions, EventStoreMirror, type MirrorDeps, type MirrorOptions, type MirrorProgress, streamOf } from './mirror.js'
