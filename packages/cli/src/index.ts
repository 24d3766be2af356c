export { type Config, resolve, type Setting, type SettingKey, settings } from './config.js'
export { type Env, type Io, main } from './main.js'
