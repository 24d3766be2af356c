export { defaultMirrorOptions, EventStoreMirror, type MirrorDeps, type MirrorOptions, type MirrorProgress, type MirrorStatus, streamOf } from './mirror.js'
export { checkConnectionString } from './connection-string.js'
