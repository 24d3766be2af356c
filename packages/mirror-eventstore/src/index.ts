export { defaultMirrorOptions, EventStoreMirror, type MirrorDeps, type MirrorOptions, type MirrorProgress, type MirrorStatus, LOG_DIVERGED, streamOf } from './mirror.js'
export { checkConnectionString } from './connection-string.js'
