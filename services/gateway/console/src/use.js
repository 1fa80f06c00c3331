// What most pages do: load data, show a problem when loading fails, and load again when a live
// change of the kinds they show arrives (a short pause gathers a burst of changes into one load).
import { onMounted, onUnmounted, ref } from 'vue'
import { onChange } from './api.js'

export function useLoad(loader, kinds = []) {
  const data = ref(null)
  const error = ref(null)
  const loading = ref(false)
  let timer = null
  const load = async () => {
    loading.value = true
    try {
      data.value = await loader()
      error.value = null
    } catch (e) {
      error.value = e
    } finally {
      loading.value = false
    }
  }
  let off = null
  onMounted(() => {
    load()
    if (kinds.length) {
      off = onChange((change) => {
        if (change.kind !== 'resync' && !kinds.includes(change.kind)) return
        clearTimeout(timer)
        timer = setTimeout(load, 250)
      })
    }
  })
  onUnmounted(() => {
    off?.()
    clearTimeout(timer)
  })
  return { data, error, loading, load }
}

// An action behind a button: its problem is shown, its success reloads.
export function useAction(after) {
  const error = ref(null)
  const busy = ref(false)
  const run = async (fn) => {
    busy.value = true
    error.value = null
    try {
      const out = await fn()
      await after?.(out)
      return out
    } catch (e) {
      error.value = e
      return undefined
    } finally {
      busy.value = false
    }
  }
  return { error, busy, run }
}

// A clock that ticks every second, for timers on screen.
export function useNow() {
  const now = ref(Date.now())
  let t = null
  onMounted(() => (t = setInterval(() => (now.value = Date.now()), 1000)))
  onUnmounted(() => clearInterval(t))
  return now
}
